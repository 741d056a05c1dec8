"""The site's out stream for a fleet's centre (docs/fleet.md): what the site keeps for the central cluster
to source over the leaf node link (nurserywatch/fleet_layout.py ``SiteOutLayout``). The JetStream gateway
of a site whose kit names a fleet (``nats.fleet``) creates it when missing; the fleet tier uses
``ensure_stream`` for its partition streams too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from enum import StrEnum

from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamSource
from nats.js.errors import NotFoundError

from nurserywatch.fleet_layout import SiteOutLayout


class Ensured(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def _config(cfg: dict[str, object]) -> StreamConfig:
    config: StreamConfig = StreamConfig.from_response(copy.deepcopy(cfg))
    return config


def _sources(sources: Iterable[StreamSource] | None) -> list[tuple[object, ...]]:
    return sorted(
        (s.name, s.filter_subject, s.external.api if s.external else None, s.external.deliver if s.external else None,
         sorted((t.src, t.dest) for t in s.subject_transforms or []))  # fmt: skip
        for s in sources or []
    )


def _differs(have: StreamConfig, want: StreamConfig) -> bool:
    return (
        sorted(have.subjects or []) != sorted(want.subjects or [])
        or _sources(have.sources) != _sources(want.sources)
        or have.max_age != want.max_age
        or have.num_replicas != want.num_replicas
    )


async def ensure_stream(js: JetStreamContext, cfg: dict[str, object]) -> Ensured:
    """Create the stream, or update it when its subjects, sources, age or replicas are not ``cfg``'s
    (a site added to or moved out of a partition). Idempotent."""
    want = _config(cfg)
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        return Ensured.CREATED
    if not _differs(info.config, want):
        return Ensured.UNCHANGED
    await js.update_stream(want)
    return Ensured.UPDATED


async def ensure_site_out_stream(site_js: JetStreamContext, site: str, replicas: int = 3) -> Ensured:
    """The site's out stream (``SiteOutLayout.stream``) on the site's own cluster: ``site_js`` is a
    JetStream context of the site's NATS (its local domain). What the site publishes for the centre
    is kept there ``SITE_OUT_MAX_AGE_S``, link or no link."""
    return await ensure_stream(site_js, SiteOutLayout(site, replicas=replicas).stream_config())
