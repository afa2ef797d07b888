"""The HTTP layer below the domains: what every service's resources share (problem responses, the
"task accepted" reply, task-not-found and conflict). It imports only `shared/`; the domains and the
gateway import it, never the other way round."""
