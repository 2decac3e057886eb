"""Git to objects with file:line, as the reconciler would render them.

kustomize with its origin records, Flux's generated kustomization and postBuild
substitution, the Flux Kustomization tree, and the render cache. Read by both pipelines
(recover and capture), so it sits below them.
"""
