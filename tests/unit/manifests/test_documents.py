"""YAML as Kubernetes reads it: 1.1 scalars in every document, and what clrk writes means the same."""

from clrk.manifests.documents import dump_all, load_all


def test_every_document_of_a_stream_reads_as_yaml_1_1() -> None:
    text = "a: yes\nb: 0777\n---\n---\nc: on\nd: n\ne: 1e3\n"
    assert load_all(text) == [{"a": True, "b": 0o777}, {"c": True, "d": False, "e": 1000.0}]


def test_strings_that_would_read_as_something_else_are_quoted() -> None:
    documents = [{"env": [{"name": "DEBUG", "value": "yes"}, {"name": "MODE", "value": "0777"}]}, {"n": "on"}]
    text = dump_all(documents)
    assert "value: 'yes'" in text and "value: '0777'" in text and "'n': 'on'" in text
    assert load_all(text) == documents, "what clrk writes reads back as written"


def test_keys_keep_their_order_and_long_lines_stay_whole() -> None:
    long = "x" * 300
    text = dump_all([{"kind": "Service", "apiVersion": "v1", "description": long}])
    assert text.splitlines() == ["kind: Service", "apiVersion: v1", f"description: {long}"]
