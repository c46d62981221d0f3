"""Adapters that put iplap's live avatar into voice-agent frameworks.

Each adapter is an optional extra and imports only the public ``import iplap`` API and
its own framework; the runtime never imports this package.

* :mod:`iplap.integrations.pipecat` (``pip install "iplap[pipecat]"``): ``IplapVideoService``.
* :mod:`iplap.integrations.livekit` (``pip install "iplap[livekit]"``): ``IplapVideoGenerator``.
"""
