"""`RouteTable.needs_model` (pure): which requests may have their body read for `model`, and
the route decided without it when some of its versions rewrite the field. Its answers are
kept per (path, Host) when no route it looks at matches by header fields (a request to a
route after ten others matched eleven routes, every time); with one that does, each answer
is made afresh (a memo there would answer for the headers of the first request)."""

from __future__ import annotations

import textwrap

from gateway.configfile import parse_config_text
from gateway.dataplane.headerview import HeaderView
from gateway.domain.routetable import RouteTable
from gateway.domain.statedoc import StateDoc
from gateway.domain.tablebuild import build_table


def _table(first_header: bool = False) -> RouteTable:
    routes = [f"""\
        - name: r{i}
          match: {{path_prefix: /v1/m{i}}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:{9000 + i}", weight: 100}}]
        """ for i in range(10)]
    hdr = ', header: {x-tenant: "a"}' if first_header else ""
    routes.append(f"""\
        - name: tenant
          match: {{path_prefix: /v1/chat{hdr}}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:9200", weight: 100}}]
        - name: chat
          match: {{path_prefix: /v1}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:9100", weight: 100}}
            - {{name: v2, url: "http://127.0.0.1:9101", weight: 0, model: m2}}
        - name: by-model
          match: {{path_prefix: /v2, model: m}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:9300", weight: 100}}]
        """)
    text = "".join(textwrap.dedent(r) for r in routes)
    return build_table(parse_config_text("routes:\n" + textwrap.indent(text, "  ")), StateDoc())


def _h(**fields: str) -> HeaderView:
    return HeaderView([(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()])


def test_needs_model_answers_and_keeps_them() -> None:
    t = _table()
    for _ in range(2):  # (the second time from the memo)
        assert t.needs_model("/v1/m3/x", "h", _h()) is False
        assert t.needs_model("/v1/chat/x", "h", _h()) is False  # `tenant`, no header match
        assert t.needs_model("/v1/other", "h", _h()) is t.by_name["chat"]
        assert t.needs_model("/v2/x", "h", _h()) is True
        assert t.needs_model("/v3", "h", _h()) is False
    assert len(t._needs or {}) == 5


def test_a_route_matching_by_header_fields_is_asked_every_time() -> None:
    t = _table(first_header=True)
    assert t.needs_model("/v1/chat/x", "h", _h(x_tenant="a")) is False  # `tenant`
    assert t.needs_model("/v1/chat/x", "h", _h()) is t.by_name["chat"]  # not `tenant`: `chat`
    assert t.needs_model("/v1/chat/x", "h", _h(x_tenant="a")) is False
    assert t._needs is None
