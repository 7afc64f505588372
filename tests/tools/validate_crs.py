"""Validate custom resources against the openAPIV3Schema of the CRDs that define them.

Usage: validate_crs.py CRD_DIR MANIFEST...   (directories are read recursively)
Prints one line per custom resource and exits 1 when any fails. Uses the `jsonschema`
library as-is: a third-party check of our own schema validation.
"""
import pathlib
import sys

import jsonschema
import yaml


def documents(path):
    files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                yield f, doc


def main():
    crd_dir = pathlib.Path(sys.argv[1])
    schemas = {}
    for _, crd in documents(crd_dir):
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (spec["group"] + "/" + version["name"], spec["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    checked = failed = 0
    for arg in sys.argv[2:]:
        for f, doc in documents(pathlib.Path(arg)):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in schemas:
                continue
            checked += 1
            errors = list(jsonschema.Draft4Validator(schemas[key]).iter_errors(doc))
            name = f"{f}: {doc['kind']} {doc['metadata'].get('name')}"
            if errors:
                failed += 1
                for e in errors:
                    print(f"FAIL {name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            else:
                print(f"ok {name}")
    print(f"{checked} checked, {failed} failed")
    sys.exit(1 if failed or not checked else 0)


main()
