"""Above both pipelines: drills into throwaway clusters, executable runbooks, reports, history and notifications."""
