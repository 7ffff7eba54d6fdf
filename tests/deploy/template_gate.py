"""Offline gate for template.yaml: run from the repo root with the gate's virtualenv python:

    python tests/deploy/template_gate.py

1. `sam validate` and `sam validate --lint` on the SAM template;
2. translation to plain CloudFormation (tests/deploy/translate.py), written to
   target/sam/template.translated.json;
3. `cfn-lint` on the translated template;
4. checks on the translated template that no linter makes (schedules, event source mapping,
   queues, functions, alarms, IAM, HTTP API, dashboard, samconfig.toml);
5. the translated stack created on moto's CloudFormation and read back with boto3.

Prints one line per check and exits 1 if any failed. Needs no AWS account and no network.
"""

import ast
import io
import json
import logging
import os
import re
import subprocess
import sys
import tomllib
import warnings
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import translate  # noqa: E402  (tests/deploy/translate.py)

REPO_ROOT = translate.REPO_ROOT
TEMPLATE = REPO_ROOT / "template.yaml"
SAMCONFIG = REPO_ROOT / "samconfig.toml"
TRANSLATED = REPO_ROOT / "target" / "sam" / "template.translated.json"
REGION = translate.REGION
ACCOUNT = "123456789012"  # moto's default account
OFFLINE_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "SAM_CLI_TELEMETRY": "0",
}

# What the template must deploy, per function. Everything below is checked against this.
FUNCTIONS = {
    "IngestFunction": {
        "role": "IngestRole", "log_group": "IngestLogGroup", "timeout": 10, "memory": 256,
        "secrets": {"IngestDatabaseSecretArn", "PepperSecretArn", "PreviousPepperSecretArn", "DatabaseCaSecretArn"},
    },
    "ConsumerFunction": {
        "role": "ConsumerRole", "log_group": "ConsumerLogGroup", "timeout": 60, "memory": 512,
        "secrets": {"ConsumerDatabaseSecretArn", "PepperSecretArn", "PreviousPepperSecretArn", "DatabaseCaSecretArn"},
    },
    "ApiFunction": {
        "role": "ApiRole", "log_group": "ApiLogGroup", "timeout": 29, "memory": 1024,
        "secrets": {
            "ApiDatabaseSecretArn", "PepperSecretArn", "PreviousPepperSecretArn", "MasterKeysSecretArn",
            "DatabaseCaSecretArn",
        },
    },
    "CleanupFunction": {
        "role": "CleanupRole", "log_group": "CleanupLogGroup", "timeout": 300, "memory": 256,
        "secrets": {"CleanupDatabaseSecretArn", "DatabaseCaSecretArn"},
    },
    "RotateKeysFunction": {
        "role": "RotateKeysRole", "log_group": "RotateKeysLogGroup", "timeout": 120, "memory": 256,
        "secrets": {"RotateKeysDatabaseSecretArn", "MasterKeysSecretArn", "DatabaseCaSecretArn"},
    },
}
DATABASE_SECRETS = {
    "IngestFunction": "IngestDatabaseSecretArn",
    "ConsumerFunction": "ConsumerDatabaseSecretArn",
    "ApiFunction": "ApiDatabaseSecretArn",
    "CleanupFunction": "CleanupDatabaseSecretArn",
    "RotateKeysFunction": "RotateKeysDatabaseSecretArn",
}
SCHEDULE_INPUT = {"scheduled_time": "<aws.scheduler.scheduled-time>"}
# (function, expression, input): the cleanup function runs the rollups job every minute too.
SCHEDULES = sorted([
    ("CleanupFunction", "cron(15 * * * ? *)", SCHEDULE_INPUT),
    ("CleanupFunction", "rate(1 minute)", {**SCHEDULE_INPUT, "job": "rollups"}),
    ("RotateKeysFunction", "cron(5 3 * * ? *)", SCHEDULE_INPUT),
], key=repr)
JOB_FUNCTIONS = sorted({function for function, _, _ in SCHEDULES})
QUEUES = ["EventsQueue", "EventsDeadLetterQueue", "ScheduleDeadLetterQueue", "JobFailureQueue"]

# Actions that have no resource-level permissions, so "*" is the only possible Resource.
# X-Ray: the trace writes Lambda's active tracing needs (and the sampling reads an X-Ray SDK
# would make). EC2: the network-interface actions a function in a VPC needs (inline, under
# HasVpc: AWSLambdaVPCAccessExecutionRole would also let every role write to every log group).
STAR_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
VPC_ACTIONS = sorted(a for a in STAR_RESOURCE_ACTIONS if a.startswith("ec2:"))
SQS_POLL_ACTIONS = sorted(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"])

# The CloudWatch EMF metrics the functions write (namespace evtrack); the dashboard shows each.
APP_METRICS = [
    "Requests", "Events", "Rejected", "BytesIn", "QueueSendLatency",
    "EventsStored", "Duplicates", "BatchSize", "EventsRejected", "Lag", "TransactionTime",
    "StepRows", "StepDuration", "KeyDaysToExpiry", "EventsQuarantined", "ErasureFailed",
]
OUTPUTS = [
    "ApiUrl", "EventsQueueUrl", "EventsDeadLetterQueueUrl", "JobFailureQueueUrl", "ScheduleDeadLetterQueueUrl",
    "IngestFunctionName", "ConsumerFunctionName", "ApiFunctionName", "CleanupFunctionName", "RotateKeysFunctionName",
]
SAMCONFIG_ENVIRONMENTS = {"staging": "evtrack-staging", "production": "evtrack-production"}

# Parameter sets the moto stacks are created with: only what is required, and every option on.
REQUIRED_PARAMETERS = {
    name: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:evtrack/gate/{name}-AbCdEf"
    for name in [
        "IngestDatabaseSecretArn", "ConsumerDatabaseSecretArn", "ApiDatabaseSecretArn",
        "CleanupDatabaseSecretArn", "RotateKeysDatabaseSecretArn", "PepperSecretArn", "MasterKeysSecretArn",
    ]
}
ALL_OPTIONS_PARAMETERS = {
    **REQUIRED_PARAMETERS,
    "PepperVersion": "3",
    "PreviousPepperSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:evtrack/gate/previous-pepper-AbCdEf",
    "PreviousPepperVersion": "2",
    "DatabaseCaSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:evtrack/gate/database-ca-AbCdEf",
    "SecretsKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "SecurityGroupIds": "sg-0123456789abcdef0",
    "AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:evtrack-alarms",
    "ConsumerBatchSize": "500",
    "ConsumerMaxConcurrency": "3",
    "IngestReservedConcurrency": "20",
    "ApiReservedConcurrency": "5",
    "ApiMemorySize": "512",
    "EventsMaxReceiveCount": "7",
    "LogRetentionDays": "14",
}
# What moto's CloudFormation accepts but does not model; these are checked on the translated
# JSON above instead (see FACTS.md, "Deploying with SAM").
MOTO_IGNORES = (
    "ApiGatewayV2 Api/Stage, Scheduler schedules, EventInvokeConfig, CloudWatch alarms, "
    "function Architectures/TracingConfig/LoggingConfig"
)


class CheckFailed(Exception):
    pass


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------- template helpers


def resources_of_type(template, resource_type):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == resource_type}


def props(template, logical_id):
    return template["Resources"][logical_id].get("Properties", {})


def get_att(logical_id, attribute="Arn"):
    return {"Fn::GetAtt": [logical_id, attribute]}


def ref(name):
    return {"Ref": name}


def default_value(template, value):
    """A parameter reference replaced by the parameter's default (as a number when it is one)."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in template["Parameters"]:
        value = template["Parameters"][value["Ref"]].get("Default")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def if_branches(value):
    """The values a (possibly Fn::If) value can take; AWS::NoValue branches are dropped."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        return [branch for v in (yes, no) for branch in if_branches(v)]
    if value == ref("AWS::NoValue"):
        return []
    return [value]


def as_list(value):
    return value if isinstance(value, list) else [value]


def statements_of(policy_document):
    """Every statement of a policy document, each Fn::If branch counted."""
    return [s for statement in as_list(policy_document["Statement"]) for s in if_branches(statement)]


def statement_resources(statement):
    return [r for resource in as_list(statement.get("Resource", [])) for r in if_branches(resource)]


def role_statements(template, role_id):
    return [s for policy in props(template, role_id).get("Policies", []) for s in statements_of(policy["PolicyDocument"])]


def http_api_routes(template):
    """(METHOD, path, integrated function) for every route in the HTTP API's OpenAPI body."""
    routes = []
    for api in resources_of_type(template, "AWS::ApiGatewayV2::Api").values():
        for path, methods in api["Properties"]["Body"]["paths"].items():
            for method, operation in methods.items():
                uri = operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
                function = re.search(r"\$\{(\w+)\.Arn\}", uri).group(1)
                routes.append((method.upper(), path, function))
    return sorted(routes)


# ---------------------------------------------------------------- 1-3: tools


def run_tool(name, *args):
    """Runs a console script installed next to this python (the gate's virtualenv)."""
    executable = Path(sys.executable).parent / name
    require(executable.exists(), f"{executable} not found: install the gate requirements into this virtualenv")
    result = subprocess.run(
        [str(executable), *args], cwd=REPO_ROOT, env={**os.environ, **OFFLINE_ENV},
        capture_output=True, text=True, timeout=300,
    )
    output = (result.stdout + result.stderr).strip()
    require(result.returncode == 0, f"{name} {' '.join(args)} exited {result.returncode}:\n{output}")
    return output


def check_sam_validate():
    run_tool("sam", "validate", "--template", str(TEMPLATE))
    return "valid SAM template (translator)"


def check_sam_validate_lint():
    run_tool("sam", "validate", "--lint", "--template", str(TEMPLATE))
    return "cfn-lint on the SAM template: clean"


def translate_template():
    os.environ.update(OFFLINE_ENV)
    translated = translate.translate(TEMPLATE)
    TRANSLATED.parent.mkdir(parents=True, exist_ok=True)
    TRANSLATED.write_text(json.dumps(translated, indent=2, sort_keys=True) + "\n")
    return translated


def check_cfn_lint():
    # No rule is ignored.
    run_tool("cfn-lint", "--regions", REGION, "--", str(TRANSLATED))
    return f"{TRANSLATED.relative_to(REPO_ROOT)}: clean"


# ---------------------------------------------------------------- 4: translated-template checks


def is_valid_cron_field(field, low, high, names, extra):
    """One field of a Scheduler cron expression: *, ?, values, ranges, lists and steps."""
    if field in ("*", "?"):
        return True
    for part in field.split(","):
        value, _, step = part.partition("/")
        if step and not step.isdigit():
            return False
        for bound in (value.split("-") if value != "*" else []):
            bound = bound.upper()
            if bound in names or re.fullmatch(extra, bound):
                continue
            if not bound.isdigit() or not low <= int(bound) <= high:
                return False
    return True


def is_valid_schedule_expression(expression):
    """Scheduler's rate(N unit) or its 6-field cron(min hour day-of-month month day-of-week year)."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        return int(rate.group(1)) > 0 and (rate.group(1) == "1") == (not rate.group(2).endswith("s"))
    cron = re.fullmatch(r"cron\((.*)\)", expression)
    if not cron:
        return False
    fields = cron.group(1).split()
    if len(fields) != 6:
        return False
    minutes, hours, day_of_month, month, day_of_week, year = fields
    months = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
    days = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
    if (day_of_month == "?") == (day_of_week == "?"):
        return False  # exactly one of the two day fields must be "?"
    return (
        is_valid_cron_field(minutes, 0, 59, set(), r"$^")
        and is_valid_cron_field(hours, 0, 23, set(), r"$^")
        and is_valid_cron_field(day_of_month, 1, 31, set(), r"L|\d{1,2}W|LW")
        and is_valid_cron_field(month, 1, 12, months, r"$^")
        and is_valid_cron_field(day_of_week, 1, 7, days, r"L|(\d|[A-Z]{3})#[1-5]|\dL")
        and is_valid_cron_field(year, 1970, 2199, set(), r"$^")
    )


def check_schedules(template):
    schedules = resources_of_type(template, "AWS::Scheduler::Schedule")
    found = sorted(((s["Properties"]["Target"]["Arn"]["Fn::GetAtt"][0], s["Properties"]["ScheduleExpression"],
                     json.loads(s["Properties"]["Target"].get("Input", "null"))) for s in schedules.values()), key=repr)
    require(found == SCHEDULES, f"schedules {found}, expected {SCHEDULES}")
    for name, schedule in schedules.items():
        p = schedule["Properties"]
        target = p["Target"]
        function = target["Arn"]["Fn::GetAtt"][0]
        require(target["Arn"] == get_att(function), f"{name}: target is not a function ARN")
        require(target.get("Input", "").count("<aws.scheduler.scheduled-time>") == 1, f"{name}: Input lacks the placeholder")
        require(is_valid_schedule_expression(p["ScheduleExpression"]), f"{name}: invalid {p['ScheduleExpression']!r}")
        require("Name" not in p, f"{name}: has a Name (OmitName not honoured; two stacks would collide)")
        require(p.get("FlexibleTimeWindow") == {"Mode": "OFF"}, f"{name}: FlexibleTimeWindow {p.get('FlexibleTimeWindow')}")
        retry = target.get("RetryPolicy", {})
        require({"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(retry), f"{name}: RetryPolicy {retry}")
        require(target.get("DeadLetterConfig") == {"Arn": get_att("ScheduleDeadLetterQueue")}, f"{name}: DeadLetterConfig")
        role = target["RoleArn"]["Fn::GetAtt"][0]
        invoke = [s for s in role_statements(template, role) if "lambda:InvokeFunction" in as_list(s["Action"])]
        require(invoke and all(statement_resources(s) == [get_att(function)] for s in invoke),
                f"{name}: role {role} does not invoke exactly {function}")
    return ", ".join(f"{s['Properties']['Target']['Arn']['Fn::GetAtt'][0]} {s['Properties']['ScheduleExpression']}"
                     for s in schedules.values())


def check_event_source_mapping(template):
    mappings = resources_of_type(template, "AWS::Lambda::EventSourceMapping")
    require(len(mappings) == 1, f"{len(mappings)} event source mappings, expected 1")
    p = next(iter(mappings.values()))["Properties"]
    require(p["EventSourceArn"] == get_att("EventsQueue"), f"event source {p['EventSourceArn']}, expected EventsQueue")
    require(p["FunctionName"] == ref("ConsumerFunction"), f"mapped to {p['FunctionName']}, expected ConsumerFunction")
    batch_size = default_value(template, p.get("BatchSize", 10))
    window = default_value(template, p.get("MaximumBatchingWindowInSeconds", 0))
    require(1 <= batch_size <= 10000, f"BatchSize {batch_size}")
    require(batch_size <= 10 or window >= 1, f"BatchSize {batch_size} > 10 needs MaximumBatchingWindowInSeconds >= 1")
    if isinstance(p.get("BatchSize"), dict) and isinstance(p.get("MaximumBatchingWindowInSeconds"), dict):
        batch_parameter = template["Parameters"][p["BatchSize"]["Ref"]]
        window_parameter = template["Parameters"][p["MaximumBatchingWindowInSeconds"]["Ref"]]
        require(int(batch_parameter.get("MaxValue", 10000)) <= 10 or int(window_parameter.get("MinValue", 0)) >= 1,
                "the batch size parameter allows > 10 but the window parameter allows 0")
    concurrency = default_value(template, p.get("ScalingConfig", {}).get("MaximumConcurrency"))
    require(isinstance(concurrency, int) and concurrency >= 2, f"ScalingConfig.MaximumConcurrency {concurrency}")
    require(p.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], f"FunctionResponseTypes {p.get('FunctionResponseTypes')}")
    # What the mapping's poller does with the consumer's role, and nothing more (AWS's list).
    polls = [s for s in role_statements(template, "ConsumerRole") if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    require(len(polls) == 1 and sorted(as_list(polls[0]["Action"])) == SQS_POLL_ACTIONS
            and polls[0].get("Resource") == get_att("EventsQueue"), f"ConsumerRole's SQS statements {polls}")
    return f"EventsQueue -> ConsumerFunction, batch {batch_size}, window {window} s, max concurrency {concurrency}"


def check_queues(template):
    events = props(template, "EventsQueue")
    timeout = props(template, "ConsumerFunction")["Timeout"]
    require(events.get("VisibilityTimeout", 30) >= 6 * timeout,
            f"EventsQueue VisibilityTimeout {events.get('VisibilityTimeout')} < 6 x consumer timeout {timeout}")
    redrive = events.get("RedrivePolicy", {})
    require(redrive.get("deadLetterTargetArn") == get_att("EventsDeadLetterQueue"), f"RedrivePolicy {redrive}")
    max_receive = default_value(template, redrive.get("maxReceiveCount"))
    require(isinstance(max_receive, int) and max_receive >= 1, f"maxReceiveCount {max_receive}")
    queues = resources_of_type(template, "AWS::SQS::Queue")
    require(sorted(queues) == sorted(QUEUES), f"queues {sorted(queues)}, expected {sorted(QUEUES)}")
    for name, queue in queues.items():
        p = queue.get("Properties", {})
        require(p.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in p, f"{name}: no server-side encryption")
    return f"visibility {events['VisibilityTimeout']} s >= 6 x {timeout} s, maxReceiveCount {max_receive}, SSE on {len(queues)} queues"


def check_functions(template):
    functions = resources_of_type(template, "AWS::Lambda::Function")
    require(sorted(functions) == sorted(FUNCTIONS), f"functions {sorted(functions)}, expected {sorted(FUNCTIONS)}")
    architecture = template["Parameters"]["Architecture"]
    require(architecture.get("Default") == "arm64", f"Architecture parameter default {architecture.get('Default')}")
    for name, expected in FUNCTIONS.items():
        p = functions[name]["Properties"]
        require(p.get("Architectures") == [ref("Architecture")], f"{name}: Architectures {p.get('Architectures')}")
        require(p.get("Runtime") == "provided.al2023", f"{name}: Runtime {p.get('Runtime')}")
        require(p.get("Handler") == "bootstrap", f"{name}: Handler {p.get('Handler')}")
        require(p.get("TracingConfig") == {"Mode": "Active"}, f"{name}: TracingConfig {p.get('TracingConfig')}")
        require(p.get("Timeout") == expected["timeout"], f"{name}: Timeout {p.get('Timeout')}, expected {expected['timeout']}")
        # The api's is a parameter (ApiMemorySize): its default is checked.
        if name == "ApiFunction":
            require(p.get("MemorySize") == ref("ApiMemorySize"), f"{name}: MemorySize {p.get('MemorySize')}, not the parameter")
        memory = default_value(template, p.get("MemorySize"))
        require(memory == expected["memory"], f"{name}: MemorySize {p.get('MemorySize')}, expected {expected['memory']}")
        require(p.get("Role") == get_att(expected["role"]), f"{name}: Role {p.get('Role')}, expected {expected['role']}")
        logging = p.get("LoggingConfig", {})
        require(logging.get("LogFormat") == "JSON", f"{name}: LogFormat {logging.get('LogFormat')}")
        # EMF metric lines carry no level: Lambda counts them as INFO and drops them above INFO.
        require(logging.get("ApplicationLogLevel", "INFO") == "INFO", f"{name}: ApplicationLogLevel {logging.get('ApplicationLogLevel')}")
        require(logging.get("LogGroup") == ref(expected["log_group"]), f"{name}: LogGroup {logging.get('LogGroup')}")
        log_group = props(template, expected["log_group"])
        require("RetentionInDays" in log_group, f"{expected['log_group']}: no RetentionInDays")
        vpc = p.get("VpcConfig")
        require(vpc is None or vpc.get("Fn::If", [None])[0] == "HasVpc", f"{name}: VpcConfig not under HasVpc")
        variables = p.get("Environment", {}).get("Variables", {})
        require(variables.get("EVTRACK_DATABASE_URL_SECRET_ID") == ref(DATABASE_SECRETS[name]),
                f"{name}: EVTRACK_DATABASE_URL_SECRET_ID is not {DATABASE_SECRETS[name]}")
        # Ingest and the api scale with their callers: an operator can cap them (and so their
        # database connections); the consumer is capped by its event source instead.
        capped_by = {"IngestFunction": ("CapsIngest", "IngestReservedConcurrency"), "ApiFunction": ("CapsApi", "ApiReservedConcurrency")}
        if name in capped_by:
            condition, parameter = capped_by[name]
            reserved = p.get("ReservedConcurrentExecutions")
            require(reserved == {"Fn::If": [condition, ref(parameter), ref("AWS::NoValue")]},
                    f"{name}: ReservedConcurrentExecutions {reserved}, not capped by {parameter}")
        # The functions that count in Redis (ingest's rate limit; ingest's and the api's failed
        # authentications) share the operator's, or count per instance: never localhost's default.
        if name in ("IngestFunction", "ApiFunction"):
            redis = variables.get("EVTRACK_REDIS_URL")
            require(redis == {"Fn::If": ["HasRedis", ref("RedisUrl"), "none"]}, f"{name}: EVTRACK_REDIS_URL {redis}")
        lease = variables.get("EVTRACK_JOB_LEASE_SECONDS")
        require(lease is None or int(lease) > p["Timeout"], f"{name}: job lease {lease} s does not outlive the {p['Timeout']} s timeout")
    return f"{len(functions)} functions: arm64 default, provided.al2023, bootstrap, tracing, JSON logs at INFO, own log groups"


def check_event_invoke_configs(template):
    configs = resources_of_type(template, "AWS::Lambda::EventInvokeConfig")
    configured = sorted(c["Properties"]["FunctionName"]["Ref"] for c in configs.values())
    require(configured == JOB_FUNCTIONS, f"EventInvokeConfig on {configured}, expected {JOB_FUNCTIONS}")
    for config in configs.values():
        p = config["Properties"]
        function = p["FunctionName"]["Ref"]
        on_failure = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        require(on_failure == get_att("JobFailureQueue"), f"{function}: OnFailure {on_failure}")
        require("MaximumRetryAttempts" in p, f"{function}: MaximumRetryAttempts unset (default 2 hidden)")
        role = FUNCTIONS[function]["role"]
        sends = [s for s in role_statements(template, role) if "sqs:SendMessage" in as_list(s["Action"])]
        require(any(get_att("JobFailureQueue") in statement_resources(s) for s in sends),
                f"{role}: no sqs:SendMessage on JobFailureQueue (SAM adds none when Role is explicit)")
    return "both job functions: OnFailure -> JobFailureQueue, their roles may send to it"


def alarm_metrics(alarm):
    """(namespace, metric name, dimensions) of an alarm, for plain and metric-math alarms."""
    p = alarm["Properties"]
    if "MetricName" in p:
        return [(p["Namespace"], p["MetricName"], p.get("Dimensions", []))]
    return [(m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"],
             m["MetricStat"]["Metric"].get("Dimensions", [])) for m in p["Metrics"] if "MetricStat" in m]


def check_alarms(template):
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    found = [metric for alarm in alarms.values() for metric in alarm_metrics(alarm)]
    expected = [("AWS/SQS", "ApproximateNumberOfMessagesVisible", [{"Name": "QueueName", "Value": get_att(q, "QueueName")}])
                for q in ["EventsDeadLetterQueue", "ScheduleDeadLetterQueue", "JobFailureQueue"]]
    expected.append(("AWS/SQS", "ApproximateAgeOfOldestMessage", [{"Name": "QueueName", "Value": get_att("EventsQueue", "QueueName")}]))
    for function in FUNCTIONS:
        for metric in ["Errors", "Throttles"]:
            expected.append(("AWS/Lambda", metric, [{"Name": "FunctionName", "Value": ref(function)}]))
    api_dimensions = [{"Name": "ApiId", "Value": ref("HttpApi")}, {"Name": "Stage", "Value": "$default"}]
    expected += [("AWS/ApiGateway", "5xx", api_dimensions), ("AWS/ApiGateway", "Count", api_dimensions)]
    missing = [f"{namespace} {metric}" for namespace, metric, dims in expected if (namespace, metric, dims) not in found]
    require(not missing, f"no alarm on: {missing}")
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        require(alarm.get("Condition") == "HasAlarms", f"{name}: not under the HasAlarms condition")
        require(p.get("AlarmActions") == [ref("AlarmTopicArn")], f"{name}: AlarmActions {p.get('AlarmActions')}")
        require(p.get("TreatMissingData") == "notBreaching", f"{name}: TreatMissingData {p.get('TreatMissingData')}")
    return f"{len(alarms)} alarms: 3 queues not empty, queue age, Errors+Throttles x {len(FUNCTIONS)}, HTTP API 5xx rate"


def check_statement(role, statement):
    """One IAM statement: no wildcard action, no NotAction/NotResource, "*" only where unavoidable."""
    where = f"{role} {statement.get('Sid', '')}".strip()
    require("NotAction" not in statement and "NotResource" not in statement, f"{where}: NotAction/NotResource")
    actions = as_list(statement["Action"])
    require(not any("*" in action for action in actions), f"{where}: wildcard action in {actions}")
    resources = statement_resources(statement)
    require(resources, f"{where}: no Resource")
    if "*" in resources:
        unscopable = [a for a in actions if a not in STAR_RESOURCE_ACTIONS]
        require(not unscopable, f"{where}: Resource \"*\" for {unscopable}")


def check_vpc_access(template, role):
    """A function's role: the network-interface actions inline, in one statement attached only
    under HasVpc, so that a function in a VPC can start."""
    raw = [s for policy in props(template, role).get("Policies", []) for s in as_list(policy["PolicyDocument"]["Statement"])]
    guarded = [s["Fn::If"] for s in raw if isinstance(s, dict) and "Fn::If" in s]
    vpc = [then for condition, then, otherwise in guarded
           if condition == "HasVpc" and otherwise == ref("AWS::NoValue") and then.get("Effect") == "Allow"
           and sorted(as_list(then["Action"])) == VPC_ACTIONS and then.get("Resource") == "*"]
    require(len(vpc) == 1, f"{role}: {len(vpc)} statements of {VPC_ACTIONS} under HasVpc, expected 1")
    ec2 = [s for s in role_statements(template, role) if any(a.startswith("ec2:") for a in as_list(s["Action"]))]
    require(len(ec2) == 1, f"{role}: EC2 actions outside the HasVpc statement: {ec2}")


def check_iam(template):
    roles = resources_of_type(template, "AWS::IAM::Role")
    function_roles = {expected["role"] for expected in FUNCTIONS.values()}
    count = 0
    for role, resource in roles.items():
        # No managed policy: AWS's VPC one would let every role write to every log group.
        managed = resource["Properties"].get("ManagedPolicyArns")
        require(managed is None, f"{role}: managed policies {managed}")
        if role in function_roles:
            check_vpc_access(template, role)
        for statement in role_statements(template, role):
            check_statement(role, statement)
            count += 1
    for function, expected in FUNCTIONS.items():
        role = expected["role"]
        granted = {r["Ref"] for s in role_statements(template, role)
                   if "secretsmanager:GetSecretValue" in as_list(s["Action"]) for r in statement_resources(s)}
        require(granted == expected["secrets"], f"{role}: GetSecretValue on {sorted(granted)}, expected {sorted(expected['secrets'])}")
        variables = props(template, function).get("Environment", {}).get("Variables", {})
        used = {b["Ref"] for name, value in variables.items() if name.endswith("_SECRET_ID") for b in if_branches(value)}
        require(used == granted, f"{function}: reads secrets {sorted(used)} but may read {sorted(granted)}")
        logs = [s for s in role_statements(template, role) if "logs:PutLogEvents" in as_list(s["Action"])]
        require(logs and all(statement_resources(s) == [{"Fn::Sub": log_stream_arn(expected["log_group"])}] for s in logs),
                f"{role}: log writes not limited to {expected['log_group']}")
    return f"{len(roles)} roles, {count} statements: scoped, secrets match each function's *_SECRET_ID variables"


def log_stream_arn(log_group):
    return f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:${{{log_group}}}:*"


def check_http_api(template):
    apis = resources_of_type(template, "AWS::ApiGatewayV2::Api")
    require(len(apis) == 1, f"{len(apis)} HTTP APIs")
    api = next(iter(apis.values()))["Properties"]
    require("CorsConfiguration" not in api and "x-amazon-apigateway-cors" not in api["Body"],
            "the HTTP API has a CORS configuration (ingest answers CORS itself)")
    stages = [s["Properties"]["StageName"] for s in resources_of_type(template, "AWS::ApiGatewayV2::Stage").values()]
    require(stages == ["$default"], f"stages {stages}, expected only $default")
    routes = http_api_routes(template)
    for method, path, function in routes:
        require(function in ("IngestFunction", "ApiFunction"), f"{method} {path} -> {function}")
        require(method != "OPTIONS" or function == "IngestFunction", f"OPTIONS {path} on {function} (only ingest answers preflight)")
    # HTTP API route keys cannot end in "/": such a route is dropped or refused at deploy time;
    # /batch already serves /batch/ (the function still sees the slash in rawPath).
    trailing = [path for _, path, _ in routes if path != "/" and path.endswith("/")]
    require(not trailing, f"routes ending in '/': {sorted(set(trailing))}")
    # Every ingest route a browser calls with a key (POSTs, and RudderStack's GET
    # /sourceConfig) needs its preflight routed; /health is called without one.
    ingest_browser = {path for method, path, function in routes
                      if function == "IngestFunction" and (method == "POST" or (method == "GET" and path != "/health"))}
    ingest_options = {path for method, path, function in routes if function == "IngestFunction" and method == "OPTIONS"}
    require(ingest_browser == ingest_options, f"browser routes without OPTIONS or the reverse: {sorted(ingest_browser ^ ingest_options)}")
    for api_resource in apis.values():
        for methods in api_resource["Properties"]["Body"]["paths"].values():
            for operation in methods.values():
                version = operation["x-amazon-apigateway-integration"].get("payloadFormatVersion")
                require(version == "2.0", f"payloadFormatVersion {version}")
    per_function = {f: sum(1 for route in routes if route[2] == f) for f in ("IngestFunction", "ApiFunction")}
    return f"no CORS, $default stage, {len(routes)} routes ({per_function['IngestFunction']} ingest, {per_function['ApiFunction']} api)"


def permission_statement(stack_name, logical_id, permission):
    """The resource-policy statement a Lambda::Permission becomes, with names as long as CloudFormation makes them."""
    function = permission["Properties"]["FunctionName"]["Ref"]
    source = permission["Properties"]["SourceArn"]["Fn::Sub"][0]
    source = source.replace("${__ApiId__}", "abcdefghij").replace("${__Stage__}", "*")
    for name, value in [("AWS::Partition", "aws"), ("AWS::Region", REGION), ("AWS::AccountId", ACCOUNT)]:
        source = source.replace("${" + name + "}", value)
    return {
        "Sid": f"{stack_name}-{logical_id}-ABCDEFGHIJKL"[:100],
        "Effect": "Allow",
        "Principal": {"Service": "apigateway.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{stack_name}-{function}-ABCDEFGHIJKL"[:140],
        "Condition": {"ArnLike": {"AWS:SourceArn": source}},
    }


def check_resource_policy_size(template):
    """Lambda refuses a function resource policy over 20 KB; each HTTP API route adds one statement."""
    stack_name = max(SAMCONFIG_ENVIRONMENTS.values(), key=len)
    statements = {}
    for logical_id, permission in resources_of_type(template, "AWS::Lambda::Permission").items():
        function = permission["Properties"]["FunctionName"]["Ref"]
        statements.setdefault(function, []).append(permission_statement(stack_name, logical_id, permission))
    sizes = {}
    for function, function_statements in statements.items():
        policy = {"Version": "2012-10-17", "Id": "default", "Statement": function_statements}
        sizes[function] = len(json.dumps(policy, separators=(",", ":")))
        require(sizes[function] <= 20480 * 0.95, f"{function}: resource policy about {sizes[function]} bytes, limit 20480 (keep 5% spare)")
    return ", ".join(f"{f} ~{size / 1024:.1f} KB" for f, size in sorted(sizes.items())) + " of 20 KB"


def check_dashboard(template):
    dashboards = resources_of_type(template, "AWS::CloudWatch::Dashboard")
    require(len(dashboards) == 1, f"{len(dashboards)} dashboards")
    body = next(iter(dashboards.values()))["Properties"]["DashboardBody"]["Fn::Sub"]
    substituted = re.sub(r"\$\{[^}]+\}", "x", body)
    try:
        json.loads(substituted)
    except json.JSONDecodeError as error:
        raise CheckFailed(f"DashboardBody is not JSON once substituted: {error}") from error
    missing = [m for m in APP_METRICS if f'"{m}"' not in body and f'\\"{m}\\"' not in body]
    require(not missing, f"dashboard lacks {missing}")
    return f"valid JSON, shows all {len(APP_METRICS)} application metrics"


def check_workflow_actions():
    """The deploy jobs hold AWS credentials: every action they run is a fixed commit (a tag can be moved)."""
    loose = []
    pinned = 0
    for workflow in sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml")):
        for number, line in enumerate(workflow.read_text().splitlines(), 1):
            match = re.match(r"\s*(?:-\s*)?uses:\s*(\S+)", line)
            if not match:
                continue
            if re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)):
                pinned += 1
            else:
                loose.append(f"{workflow.name}:{number} {match.group(1)}")
    require(not loose, f"actions not pinned to a commit: {loose}")
    require((REPO_ROOT / ".github" / "dependabot.yml").exists(), "no .github/dependabot.yml to update the pinned actions")
    return f"{pinned} actions pinned to commits, updated by Dependabot"


def check_parameters_and_outputs(template):
    undocumented = [name for name, p in template["Parameters"].items() if not p.get("Description")]
    require(not undocumented, f"parameters without Description: {undocumented}")
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    require(sorted(grouped) == sorted(template["Parameters"]), f"the console's groups hold {sorted(grouped)}")
    # A previous pepper without its version would hash under version 0: every key refused.
    rule = template.get("Rules", {}).get("PreviousPepperNeedsItsVersion", {})
    require(rule.get("RuleCondition") == {"Fn::Not": [{"Fn::Equals": [ref("PreviousPepperSecretArn"), ""]}]}
            and {"Fn::Not": [{"Fn::Equals": [ref("PreviousPepperVersion"), ""]}]} in [a["Assert"] for a in rule.get("Assertions", [])],
            f"no rule that PreviousPepperVersion is set with PreviousPepperSecretArn: {rule}")
    missing = [name for name in OUTPUTS if name not in template.get("Outputs", {})]
    require(not missing, f"missing outputs: {missing}")
    require(template.get("Description"), "no template Description")
    return f"{len(template['Parameters'])} parameters described and grouped, {len(OUTPUTS)} outputs"


def check_samconfig(template):
    config = tomllib.loads(SAMCONFIG.read_text())
    required = {name for name, p in template["Parameters"].items() if "Default" not in p}
    for environment, stack_name in SAMCONFIG_ENVIRONMENTS.items():
        deploy = config.get(environment, {}).get("deploy", {}).get("parameters", {})
        build = config.get(environment, {}).get("build", {}).get("parameters", {})
        require(deploy.get("stack_name") == stack_name, f"{environment}: stack_name {deploy.get('stack_name')}")
        require(deploy.get("region") == REGION, f"{environment}: region {deploy.get('region')}")
        require(deploy.get("resolve_s3") is True, f"{environment}: resolve_s3 not true")
        require(deploy.get("capabilities") == "CAPABILITY_IAM", f"{environment}: capabilities {deploy.get('capabilities')}")
        require(deploy.get("confirm_changeset") is False and deploy.get("fail_on_empty_changeset") is False,
                f"{environment}: confirm_changeset / fail_on_empty_changeset must be false")
        require("cached" not in build, f"{environment}: build must not be cached (SAM misses changes in shared/)")
        overrides = dict(item.split("=", 1) for item in deploy.get("parameter_overrides", []))
        unknown = sorted(set(overrides) - set(template["Parameters"]))
        require(not unknown, f"{environment}: unknown parameters {unknown}")
        require(required <= set(overrides), f"{environment}: missing required parameters {sorted(required - set(overrides))}")
        for name, value in overrides.items():
            pattern = template["Parameters"][name].get("AllowedPattern")
            require(pattern is None or re.fullmatch(pattern, value), f"{environment}: {name}={value} does not match {pattern}")
    return f"{', '.join(SAMCONFIG_ENVIRONMENTS)}: complete, all required parameters given"


# ---------------------------------------------------------------- 5: moto

NO_VALUE = object()
PSEUDO_PARAMETERS = {
    "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
}


class DeployedStack:
    """What a template's intrinsics resolve to in one created stack (for comparing with boto3)."""

    def __init__(self, template, stack_name, parameters, physical_ids, attributes):
        self.stack_name = stack_name
        self.physical_ids = physical_ids  # logical id -> physical id
        self.attributes = attributes  # "Logical.Attribute" -> value
        self.parameters = {}
        for name, p in template["Parameters"].items():
            value = parameters.get(name, p.get("Default", ""))
            self.parameters[name] = str(value).split(",") if p["Type"] == "CommaDelimitedList" else str(value)
        self.conditions = {name: self.resolve(c) for name, c in template.get("Conditions", {}).items()}

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name == "AWS::StackName":
            return self.stack_name
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical_ids[name]

    def substitute(self, text, variables):
        def value(match):
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self.attributes[name])
            return str(self.ref(name))
        return re.sub(r"\$\{([^}!]+)\}", value, text)

    def resolve(self, value):
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self.attributes[".".join(value["Fn::GetAtt"])]
        if set(value) == {"Fn::Sub"}:
            text, variables = value["Fn::Sub"] if isinstance(value["Fn::Sub"], list) else (value["Fn::Sub"], {})
            return self.substitute(text, variables)
        if set(value) == {"Fn::If"}:
            condition, yes, no = value["Fn::If"]
            return self.resolve(yes if self.conditions[condition] else no)
        if set(value) == {"Fn::Join"}:
            separator, items = value["Fn::Join"]
            return separator.join(self.resolve(items))
        if set(value) == {"Fn::Equals"}:
            left, right = self.resolve(value["Fn::Equals"])
            return left == right
        if set(value) == {"Fn::Not"}:
            return not self.resolve(value["Fn::Not"][0])
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}


def aws_clients():
    import boto3

    return {name: boto3.client(name, region_name=REGION) for name in ["s3", "cloudformation", "sqs", "lambda", "iam", "logs"]}


def upload_dummy_code(clients, template):
    """moto's Lambda needs the Code object to exist: one tiny zip per function."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("bootstrap", "#!/bin/sh\nexit 1\n")
    clients["s3"].create_bucket(Bucket=translate.CODE_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for function in resources_of_type(template, "AWS::Lambda::Function").values():
        code = function["Properties"]["Code"]
        clients["s3"].put_object(Bucket=code["S3Bucket"], Key=code["S3Key"], Body=archive.getvalue())


def create_stack(clients, template, stack_name, parameters):
    cloudformation = clients["cloudformation"]
    cloudformation.create_stack(
        StackName=stack_name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    require(stack["StackStatus"] == "CREATE_COMPLETE", f"{stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason')}")
    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    physical_ids = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries}
    attributes = {}
    for name in resources_of_type(template, "AWS::SQS::Queue"):
        queue = clients["sqs"].get_queue_attributes(QueueUrl=physical_ids[name], AttributeNames=["QueueArn"])
        attributes[f"{name}.Arn"] = queue["Attributes"]["QueueArn"]
        attributes[f"{name}.QueueName"] = physical_ids[name].rsplit("/", 1)[1]
    for name in resources_of_type(template, "AWS::Lambda::Function"):
        attributes[f"{name}.Arn"] = clients["lambda"].get_function_configuration(FunctionName=physical_ids[name])["FunctionArn"]
    for name in resources_of_type(template, "AWS::IAM::Role"):
        attributes[f"{name}.Arn"] = clients["iam"].get_role(RoleName=physical_ids[name])["Role"]["Arn"]
    return DeployedStack(template, stack_name, parameters, physical_ids, attributes)


def moto_queues(clients, template, stack):
    events = clients["sqs"].get_queue_attributes(QueueUrl=stack.physical_ids["EventsQueue"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(events["RedrivePolicy"])
    require(redrive["deadLetterTargetArn"] == stack.attributes["EventsDeadLetterQueue.Arn"], f"redrive target {redrive}")
    require(int(redrive["maxReceiveCount"]) == int(stack.parameters["EventsMaxReceiveCount"]), f"maxReceiveCount {redrive}")
    require(int(events["VisibilityTimeout"]) == props(template, "EventsQueue")["VisibilityTimeout"], f"VisibilityTimeout {events['VisibilityTimeout']}")
    for name in QUEUES:
        attributes = clients["sqs"].get_queue_attributes(QueueUrl=stack.physical_ids[name], AttributeNames=["All"])["Attributes"]
        require(attributes.get("SqsManagedSseEnabled") == "true", f"{name}: SqsManagedSseEnabled {attributes.get('SqsManagedSseEnabled')}")


def moto_event_source_mapping(clients, stack):
    mappings = clients["lambda"].list_event_source_mappings(FunctionName=stack.physical_ids["ConsumerFunction"])["EventSourceMappings"]
    require(len(mappings) == 1, f"{len(mappings)} mappings on the consumer")
    mapping = mappings[0]
    require(mapping["EventSourceArn"] == stack.attributes["EventsQueue.Arn"], f"mapping source {mapping['EventSourceArn']}")
    require(mapping["FunctionArn"] == stack.attributes["ConsumerFunction.Arn"], f"mapping function {mapping['FunctionArn']}")
    require(mapping["BatchSize"] == int(stack.parameters["ConsumerBatchSize"]), f"BatchSize {mapping['BatchSize']}")
    require(mapping.get("MaximumBatchingWindowInSeconds") == int(stack.parameters["ConsumerBatchWindowSeconds"]), "batching window")
    require(mapping.get("ScalingConfig", {}).get("MaximumConcurrency") == int(stack.parameters["ConsumerMaxConcurrency"]),
            f"ScalingConfig {mapping.get('ScalingConfig')}")
    require(mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], f"FunctionResponseTypes {mapping.get('FunctionResponseTypes')}")


def without_none(value):
    """moto keeps an Fn::If's AWS::NoValue inside a list as None; CloudFormation drops it."""
    if isinstance(value, list):
        return [without_none(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: without_none(item) for key, item in value.items() if item is not None}
    return value


def policy_document(document):
    """moto returns inline policies from CloudFormation as str(dict), not JSON; accept both."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError:
            document = ast.literal_eval(document)
    return without_none(document)


def moto_roles(clients, template, stack):
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        physical = stack.physical_ids[name]
        declared = {p["PolicyName"]: stack.resolve(p["PolicyDocument"]) for p in role["Properties"].get("Policies", [])}
        names = clients["iam"].list_role_policies(RoleName=physical)["PolicyNames"]
        require(sorted(names) == sorted(declared), f"{name}: inline policies {names}, declared {sorted(declared)}")
        for policy_name in names:
            actual = policy_document(clients["iam"].get_role_policy(RoleName=physical, PolicyName=policy_name)["PolicyDocument"])
            require(actual == declared[policy_name], f"{name}/{policy_name} differs:\n{actual}\nvs declared\n{declared[policy_name]}")
        trust = clients["iam"].get_role(RoleName=physical)["Role"]["AssumeRolePolicyDocument"]
        require(policy_document(trust) == stack.resolve(role["Properties"]["AssumeRolePolicyDocument"]), f"{name}: trust policy differs")


def moto_functions(clients, template, stack):
    for name, expected in FUNCTIONS.items():
        config = clients["lambda"].get_function_configuration(FunctionName=stack.physical_ids[name])
        declared = props(template, name)
        require(config["Role"] == stack.attributes[f"{expected['role']}.Arn"], f"{name}: role {config['Role']}")
        for key in ["Runtime", "Handler", "Timeout", "MemorySize"]:
            value = stack.resolve(declared[key])
            value = int(value) if key in ("Timeout", "MemorySize") else value
            require(config[key] == value, f"{name}: {key} {config[key]}, declared {value}")
        variables = {k: str(v) for k, v in config.get("Environment", {}).get("Variables", {}).items()}
        declared_variables = stack.resolve(declared["Environment"]["Variables"])
        require(variables == declared_variables, f"{name}: environment {variables}\nvs declared {declared_variables}")
        log_group_name = stack.physical_ids[expected["log_group"]]
        groups = clients["logs"].describe_log_groups(logGroupNamePrefix=log_group_name)["logGroups"]
        group = next((g for g in groups if g["logGroupName"] == log_group_name), None)
        require(group is not None, f"{name}: log group {log_group_name} missing")
        require(group.get("retentionInDays") == int(stack.parameters["LogRetentionDays"]), f"{log_group_name}: retention {group.get('retentionInDays')}")
        declared_reserved = stack.resolve(declared.get("ReservedConcurrentExecutions"))
        if declared_reserved not in (None, NO_VALUE):
            reserved = clients["lambda"].get_function_concurrency(FunctionName=stack.physical_ids[name])
            require(reserved.get("ReservedConcurrentExecutions") == int(declared_reserved),
                    f"{name}: reserved concurrency {reserved.get('ReservedConcurrentExecutions')}, declared {declared_reserved}")


def quiet_moto():
    """moto warns once per resource type it does not model (MOTO_IGNORES): summarised below instead."""
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Tried to parse .* not supported by moto", category=UserWarning)


def check_moto_stack(template, stack_name, parameters):
    from moto import mock_aws

    os.environ.update(OFFLINE_ENV)
    quiet_moto()
    with mock_aws():
        clients = aws_clients()
        upload_dummy_code(clients, template)
        stack = create_stack(clients, template, stack_name, parameters)
        moto_queues(clients, template, stack)
        moto_event_source_mapping(clients, stack)
        moto_roles(clients, template, stack)
        moto_functions(clients, template, stack)
    conditions = ", ".join(f"{k}={'on' if v else 'off'}" for k, v in stack.conditions.items())
    return f"CREATE_COMPLETE ({conditions}); queues, redrive, SSE, mapping, roles, functions, log groups as declared"


# ---------------------------------------------------------------- main


def run_check(results, name, check, *args):
    try:
        detail = check(*args)
        results.append((name, True))
        print(f"ok    {name}: {detail}")
        return True
    except CheckFailed as failure:
        results.append((name, False))
        print(f"FAIL  {name}: {failure}")
        return False


def main():
    os.chdir(REPO_ROOT)
    results = []
    run_check(results, "sam validate", check_sam_validate)
    run_check(results, "sam validate --lint", check_sam_validate_lint)
    try:
        translated = translate_template()
        print(f"ok    translate: {len(translated['Resources'])} resources -> {TRANSLATED.relative_to(REPO_ROOT)}")
    except Exception as error:  # the translator's own errors say what is wrong
        print(f"FAIL  translate: {type(error).__name__}: {error}")
        return 1
    run_check(results, "cfn-lint (translated)", check_cfn_lint)
    run_check(results, "workflow actions", check_workflow_actions)
    for name, check in [
        ("schedules", check_schedules),
        ("event source mapping", check_event_source_mapping),
        ("queues", check_queues),
        ("functions", check_functions),
        ("event invoke configs", check_event_invoke_configs),
        ("alarms", check_alarms),
        ("iam", check_iam),
        ("http api", check_http_api),
        ("lambda resource policy size", check_resource_policy_size),
        ("dashboard", check_dashboard),
        ("parameters and outputs", check_parameters_and_outputs),
        ("samconfig.toml", check_samconfig),
    ]:
        run_check(results, name, check, translated)
    run_check(results, "moto stack (defaults)", check_moto_stack, translated, "evtrack-gate-defaults", REQUIRED_PARAMETERS)
    run_check(results, "moto stack (all options)", check_moto_stack, translated, "evtrack-gate-options", ALL_OPTIONS_PARAMETERS)
    print(f"note  moto ignores {MOTO_IGNORES}: those are checked on the translated JSON above")
    failed = [name for name, passed in results if not passed]
    if failed:
        print(f"\n{len(failed)} of {len(results)} checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(results)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
