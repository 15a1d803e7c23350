"""Every route's body fields against the app's dependency names: litestar reports a body field
that shares a dependency's name as the server's own fault (500), so a client's wrong-typed
field would read as central's bug instead of a 400 that names the field."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec

from central.app import create_app
from central.settings import CentralConfig


def test_no_body_field_is_named_like_a_dependency(tmp_path: Path) -> None:
    app = create_app(CentralConfig(home=str(tmp_path / "central")))
    dependencies = set(app.dependencies)
    assert {"catalog_service", "tokens", "registry"} <= dependencies
    clashes = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            data = handler.parsed_fn_signature.parameters.get("data")
            body = data.annotation if data is not None else None
            for kind in typing.get_args(body) or (body,):
                if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                    shared = dependencies & set(kind.__struct_fields__)
                    clashes += [f"{route.path}: {kind.__name__}.{f}" for f in sorted(shared)]
    assert not clashes, f"body fields named like dependencies (rename the provider): {clashes}"
