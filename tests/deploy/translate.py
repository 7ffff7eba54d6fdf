"""Translates template.yaml (SAM) into plain CloudFormation, offline, with aws-sam-translator.

As a module: `translate(template_path) -> dict`. As a script (the route-parity test runs it):

    python tests/deploy/translate.py [template.yaml]    # prints the translated JSON to stdout

Needs only aws-sam-translator and boto3 (no credentials, no network).
"""

import json
import os
import sys
from pathlib import Path

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
REGION = "eu-west-1"
# The translator refuses local CodeUri values (sam build / sam package replace them); any
# s3:// location will do for an offline translation. Tests that upload code use this bucket.
CODE_BUCKET = "evtrack-template-gate"


def code_key(code_uri: str) -> str:
    """The S3 key standing in for a function's local CodeUri (functions/ingest -> ingest.zip)."""
    return Path(code_uri).name + ".zip"


def with_s3_code_uris(sam: dict) -> dict:
    """Replaces every function's local CodeUri with an s3:// URI in CODE_BUCKET."""
    for resource in sam.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.setdefault("Properties", {})
        code_uri = properties.get("CodeUri")
        if isinstance(code_uri, str) and not code_uri.startswith("s3://"):
            properties["CodeUri"] = f"s3://{CODE_BUCKET}/{code_key(code_uri)}"
    return sam


def translate(template_path: Path = DEFAULT_TEMPLATE, parameter_values: dict | None = None) -> dict:
    """The CloudFormation template SAM deploys for `template_path` (parameters keep their Refs)."""
    sam = yaml_parse(Path(template_path).read_text())
    sam = with_s3_code_uris(sam)
    translator = Translator(
        managed_policy_map={},
        sam_parser=Parser(),
        boto_session=boto3.Session(region_name=REGION),
    )
    return translator.translate(sam, parameter_values=parameter_values or {})


def main(argv: list[str]) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    template_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_TEMPLATE
    json.dump(translate(template_path), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
