"""GitOps reconcilers (Flux, Argo CD): install them, point them at git, tell when they are ready at a revision."""
