"""The docs check's parser and output matcher (tests/support/doccheck.py): pure logic."""

from __future__ import annotations

from pathlib import Path

from tests.support.doccheck import commands_of, output_matches, parse_document

PAGE = """# A page
<!-- doc-check: instance /srv/x up ports=18000 -->

```console
$ scimgate token create okta --dir /srv/x \\
    --expires-in 90d
sgt_abc…
# token 'okta' created
$ python3 -c '
print(1)'
1
```

<!-- doc-check: skip needs a real Okta tenant -->
```console
$ curl https://scim.example.com/
```

<!-- doc-check: file policy.yaml -->
```yaml
a: 1
```
"""


def test_blocks_markers_and_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    doc = parse_document(page)
    assert (doc.instance_path, doc.start_up, doc.ports) == ("/srv/x", True, [18000])
    run, skip, file = doc.blocks
    assert run.runs and not skip.runs and not file.runs
    assert (skip.marker, skip.argument) == ("skip", "needs a real Okta tenant")
    assert (file.marker, file.argument) == ("file", "policy.yaml")
    first, second = commands_of(run)
    assert first.text == "scimgate token create okta --dir /srv/x \\\n    --expires-in 90d"
    assert first.expected == ["sgt_abc…", "# token 'okta' created"]
    assert second.text == "python3 -c '\nprint(1)'" and second.expected == ["1"]


def test_output_normalised_and_ellipsis() -> None:
    shown = [
        "TARGET  REACHABLE  ENTRIES  LAST RESYNC",
        "local   yes        1        2026-11-28T14:24:03.523102Z",
        "…",
        "id ce6f3da9-b884-4387-97da-f45dd5531bfc took 11.7 ms, head …",
    ]
    printed = (
        "TARGET REACHABLE ENTRIES LAST RESYNC\n"
        "local  yes       1       2026-12-03T10:00:00.000001Z\n"
        "extra line one\nextra line two\n"
        "id 105c6864-8e1d-4686-b717-dbb24582528c took 3.2 ms, head abc\n"
    )
    assert output_matches(shown, printed)
    # a count is compared, not normalised: ENTRIES 2 where the page shows 1 is drift
    assert not output_matches(shown, printed.replace("yes       1", "yes       2"))
    # a line the page shows but the product no longer prints is drift
    assert not output_matches(["a", "b"], "a\n")
    assert output_matches([], "")
    assert not output_matches([], "unexpected\n")
