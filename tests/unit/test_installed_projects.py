"""What `cerise.remote.install.read_script` prints, parsed (captured output, no remote)."""

from __future__ import annotations

from cerise.model.specialisation import Installed
from cerise.remote import install

CAPTURED = (
    'example\t.install/example/0.1.0-3fa2\t0.1.0\t{"specialisation": "ns/example", '
    '"uid": "u-1", "generation": 2, "version": "0.1.0"}\n'
    "legacy\t\t0.0.1\t\n"
    "broken\t\t1.0\t{not json\n"
    "odd\tline\n"
)


def test_installed_projects_are_read_with_their_owner() -> None:
    assert install.parse_installed(CAPTURED) == {
        "example": Installed("example", "0.1.0", owner_uid="u-1", owner="ns/example",
                             directory=".install/example/0.1.0-3fa2"),
        "legacy": Installed("legacy", "0.0.1"),
        "broken": Installed("broken", "1.0"),
    }


def test_nothing_printed_is_nothing_installed() -> None:
    assert install.parse_installed("") == {}
