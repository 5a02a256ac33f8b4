"""The Pagoda gateway: an OpenAI-API reverse proxy in front of the worker pods.

It authenticates tenants and enforces their limits (tenants, limits), picks a ready worker with
prefix or session affinity under bounded loads (routing, affinity, backends), retries before the
first byte and fails over to the standby tier at once (proxy), holds requests while no worker is
ready (hold_queue), and learns the workers from EndpointSlices or a static list (discovery), their
load from their /metrics (load_scraper). It never imports torch.
"""
