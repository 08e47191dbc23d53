"""Every protocols/vectors/*.json file, under CPython and under the real micropython VM.

Files added later are picked up without touching this module. The form is protocols/vectors/README.md;
each vector is checked by tests.vectorform.check_vector on both interpreters: encode value -> exactly hex,
decode hex -> value, or decode hex -> ValueError naming the problem.
"""

import json

import pytest

from tests.mpvm import REPO, check_micropython
from tests.vectorform import check_vector, from_json, to_json

VECTOR_DIR = REPO / "protocols" / "vectors"
FILES = sorted(VECTOR_DIR.glob("*.json"))


def _vectors(path):
    return json.loads(path.read_text(encoding="utf-8"))["vectors"]


CASES = [(path, vector) for path in FILES for vector in _vectors(path)]


def test_the_rfc_vectors_are_among_the_files():
    assert VECTOR_DIR / "rfc8949.json" in FILES


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_file_follows_the_documented_form(path):
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document.get("description"), str) and document["description"]
    names = [vector["name"] for vector in document["vectors"]]
    assert len(names) == len(set(names)), "vector names must be unique"
    for vector in document["vectors"]:
        assert ("value" in vector) != ("error" in vector), vector["name"]
        assert vector["hex"] == vector["hex"].lower() and bytes.fromhex(vector["hex"]), vector["name"]
        assert vector.get("decode_only", False) in (True, False), vector["name"]
        assert not ("error" in vector and "decode_only" in vector), vector["name"]
        if "value" in vector:  # written in the one documented spelling ($map pairs in encoded-key order, ...)
            assert to_json(from_json(vector["value"])) == vector["value"], vector["name"]


@pytest.mark.parametrize(
    "path, vector", CASES, ids=[f"{path.stem}:{vector['name']}" for path, vector in CASES]
)
def test_vector_under_cpython(path, vector):
    assert check_vector(vector) is None


_VM_CODE = """
import json
from tests.vectorform import check_vector, from_json, to_json
with open(PATH) as f:
    vectors = json.load(f)["vectors"]
failures = []
for vector in vectors:
    try:
        reason = check_vector(vector)
    except Exception as error:
        reason = "raised %s: %s" % (type(error).__name__, error)
    if reason:
        failures.append([vector["name"], reason])
print(json.dumps({"count": len(vectors), "failures": failures}))
"""


@pytest.mark.micropython
@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_vector_file_under_micropython(path):
    out = check_micropython(_VM_CODE.replace("PATH", repr(str(path))), heap="110k")
    report = json.loads(out.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["count"] == len(_vectors(path))
