"""The egress gateway: the only holder of provider keys, the only way out for agents."""
