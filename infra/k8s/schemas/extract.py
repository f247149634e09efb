"""Write the JSON schemas that `kubeconform -strict` checks steno's Kubernetes manifests against.

kubeconform looks a resource's schema up by kind and apiVersion; these files are laid out the way
its `-schema-location 'infra/k8s/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json'` template
names them: `{kind}-{group's first label}-{version}.json` (core group: `{kind}-{version}.json`),
lowercase. The test suite reads only these files, so validation needs no network.

Sources (README.md beside this file lists them with their licences):
- core kinds: the `swagger.json` of the Kubernetes release (the `k8s.io/kubernetes` Go module,
  fetched with `go mod download`), every `$ref` inlined ("standalone");
- custom resources: the `openAPIV3Schema` of each operator's own CRD file, read from a git clone
  of the operator at its release tag (`git show TAG:PATH`).

Strict, like kubeconform's own `openapi2jsonschema`: every object schema that lists properties
gets `additionalProperties: false` unless it is marked `x-kubernetes-preserve-unknown-fields`,
so a misspelt field fails instead of passing unseen. `int-or-string` becomes string|integer, a
Quantity string|number, and a raw-JSON field (`format: byte` that preserves unknown fields) any
value, as the API server accepts them. Descriptions are dropped (size only).

    python infra/k8s/schemas/extract.py --git strimzi/strimzi-kafka-operator=PATH \\
        --git k8ssandra/cass-operator=PATH --git kedacore/keda=PATH
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

OUT_DIR = Path(__file__).parent
KUBERNETES_VERSION = "v1.35.4"
# The core kinds steno's manifests use (kind, group, version); a new one is added here.
CORE_KINDS = (
    ("ConfigMap", "", "v1"),
    ("Secret", "", "v1"),
    ("Service", "", "v1"),
    ("ServiceAccount", "", "v1"),
    ("Deployment", "apps", "v1"),
    ("StatefulSet", "apps", "v1"),
    ("Job", "batch", "v1"),
    ("HorizontalPodAutoscaler", "autoscaling", "v2"),
    ("PodDisruptionBudget", "policy", "v1"),
    ("Ingress", "networking.k8s.io", "v1"),
)


@dataclass(frozen=True)
class CrdSource:
    """One operator's CRD file at a release: where every custom resource schema comes from."""

    repo: str
    tag: str
    path: str


CRD_SOURCES = (
    CrdSource("strimzi/strimzi-kafka-operator", "1.2.0", "install/cluster-operator/040-Crd-kafka.yaml"),
    CrdSource("strimzi/strimzi-kafka-operator", "1.2.0", "install/cluster-operator/043-Crd-kafkatopic.yaml"),
    CrdSource("strimzi/strimzi-kafka-operator", "1.2.0", "install/cluster-operator/045-Crd-kafkanodepool.yaml"),
    CrdSource(
        "k8ssandra/cass-operator", "v1.32.0", "config/crd/bases/cassandra.datastax.com_cassandradatacenters.yaml"
    ),
    CrdSource("kedacore/keda", "v2.20.2", "config/crd/bases/keda.sh_scaledobjects.yaml"),
)


def file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for this kind."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}.json".lower()


def strict(node: Any) -> Any:
    """A copy of a schema with descriptions dropped, unknown fields refused and the API server's
    looser scalar types spelt out (see the module docstring)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    if node.get("format") == "byte" and node.get("x-kubernetes-preserve-unknown-fields"):
        return {}  # raw JSON (a Go json.RawMessage, e.g. CassandraDatacenter.spec.config): any value
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    open_ended = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and not open_ended:
        out["additionalProperties"] = False
    return out


def pin_kind(schema: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """Only this kind at this apiVersion validates against its file."""
    schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
    return schema


def core_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name → standalone schema for each of CORE_KINDS."""
    definitions = swagger["definitions"]
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    by_gvk = {
        (gvk["kind"], gvk["group"], gvk["version"]): name
        for name, definition in definitions.items()
        for gvk in definition.get("x-kubernetes-group-version-kind", [])
    }
    out = {}
    for kind, group, version in CORE_KINDS:
        schema = _inline(definitions[by_gvk[(kind, group, version)]], definitions, ())
        api_version = f"{group}/{version}" if group else version
        out[file_name(kind, group, version)] = pin_kind(strict(schema), kind, api_version)
    return out


def _inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...]) -> Any:
    """`node` with every `#/definitions/...` reference replaced by the definition itself."""
    if isinstance(node, list):
        return [_inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/definitions/")
        if name in seen:
            raise ValueError(f"{name} refers to itself; a recursive kind cannot be inlined")
        return _inline(definitions[name], definitions, (*seen, name))
    return {
        key: _inline(value, definitions, seen)
        for key, value in node.items()
        if key != "x-kubernetes-group-version-kind"
    }


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name → schema for every served version of one CustomResourceDefinition."""
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    return {
        file_name(kind, group, version["name"]): pin_kind(
            strict(version["schema"]["openAPIV3Schema"]), kind, f"{group}/{version['name']}"
        )
        for version in crd["spec"]["versions"]
        if version.get("served", True)
    }


def kubernetes_swagger() -> dict[str, Any]:
    """The release's OpenAPI v2 document, from its Go module (downloaded once into Go's cache)."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        check=True,
        capture_output=True,
        text=True,
    )
    module_dir = Path(json.loads(result.stdout)["Dir"])
    return json.loads((module_dir / "api" / "openapi-spec" / "swagger.json").read_text())


def crd_from_git(git_dir: Path, source: CrdSource) -> dict[str, Any]:
    text = subprocess.run(
        ["git", "-C", str(git_dir), "show", f"{source.tag}:{source.path}"], check=True, capture_output=True, text=True
    ).stdout
    crd: dict[str, Any] = yaml.safe_load(text)
    return crd


def write(schemas: dict[str, dict[str, Any]]) -> None:
    for name, schema in sorted(schemas.items()):
        (OUT_DIR / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--git", action="append", default=[], metavar="OWNER/NAME=PATH", help="a git clone of an operator"
    )
    args = parser.parse_args()
    clones = dict(entry.split("=", 1) for entry in args.git)
    missing = sorted({s.repo for s in CRD_SOURCES} - clones.keys())
    if missing:
        parser.error(f"no --git clone given for {', '.join(missing)}")
    schemas = core_schemas(kubernetes_swagger())
    for source in CRD_SOURCES:
        schemas.update(crd_schemas(crd_from_git(Path(clones[source.repo]), source)))
    write(schemas)


if __name__ == "__main__":
    main()
