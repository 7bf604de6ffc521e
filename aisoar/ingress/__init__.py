"""The webhook ingress: authenticate, normalise, persist, acknowledge, dispatch."""
