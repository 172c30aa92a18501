"""Makes self-contained kubeconform schemas from kubernetes-validate's.

kubernetes-validate ships one JSON schema per kind whose $refs point into a
shared /api/_definitions.json, a path its own resolver maps. kubeconform
resolves no such path, and skips a schema it cannot compile. This copies
each kind's schema with the definitions it reaches (transitively) under its
own $defs and its $refs made local; nothing else changes.

usage: standalone.py SRC_DIR DST_DIR KIND_FILE...
"""
import json
import os
import sys

PREFIX = "/api/_definitions.json#/$defs/"


def refs(node, out):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str):
            out.add(r)
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def localise(node):
    if isinstance(node, dict):
        return {k: (("#/$defs/" + v[len(PREFIX):]) if k == "$ref" and isinstance(v, str) and v.startswith(PREFIX)
                    else localise(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [localise(v) for v in node]
    return node


def main(src, dst, kinds):
    with open(os.path.join(src, "_definitions.json")) as f:
        defs = json.load(f)["$defs"]
    os.makedirs(dst, exist_ok=True)
    for kind in kinds:
        with open(os.path.join(src, kind)) as f:
            schema = json.load(f)
        need, todo = {}, set()
        refs(schema, todo)
        while todo:
            r = todo.pop()
            name = r[len(PREFIX):] if r.startswith(PREFIX) else r[len("#/$defs/"):] if r.startswith("#/$defs/") else None
            if name is None or name in need:
                continue
            need[name] = defs[name]
            refs(defs[name], todo)
        schema = localise(schema)
        schema["$defs"] = {k: localise(v) for k, v in sorted(need.items())}
        with open(os.path.join(dst, kind), "w") as f:
            json.dump(schema, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
