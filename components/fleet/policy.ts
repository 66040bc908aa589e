/**
 * IAM policy documents of the GPU runner fleet, as pure functions of already-resolved ARNs, plus
 * `findWildcardWrites`, the check the tests run over every document the component creates.
 */

/** One IAM policy statement (the subset of the grammar this component emits and checks). */
export interface PolicyStatement {
    Sid?: string;
    Effect: "Allow" | "Deny";
    Action?: string | string[];
    NotAction?: string | string[];
    Resource?: string | string[];
    NotResource?: string | string[];
    Principal?: unknown;
    Condition?: Record<string, Record<string, string | string[]>>;
}

/** An IAM policy document. */
export interface PolicyDocument {
    Version: "2012-10-17";
    Statement: PolicyStatement[];
}

/** Tag every fleet instance carries, whose value is its pool name. */
export const POOL_TAG_KEY = "strata:pool";
/** Tag every taggable resource of the fleet carries, whose value is the stack name. */
export const STACK_TAG_KEY = "strata:stack";
/**
 * Tag the scaler must put on each JIT-config parameter (`PutParameter ... Tags`), whose value is the
 * ARN of the instance the parameter is for. The instance role can read and delete a parameter only
 * when this tag equals the caller's `${ec2:SourceInstanceARN}`.
 */
export const INSTANCE_ARN_TAG_KEY = "strata:instance-arn";
/**
 * Per-job instance tags the webhook scaler removes again when it releases an instance it lost a race
 * for (`TAGS.jobId` and `TAGS.delivery` of scaler/logic.ts). The only tags it may delete.
 */
export const RELEASABLE_TAG_KEYS: readonly string[] = ["strata:job-id", "strata:delivery"];

/**
 * Write actions that do not support resource-level permissions at all, so `Resource: "*"` is the only
 * possible form. These five are the Session Manager minimum (AWS "custom IAM role for Session
 * Manager"): they let the SSM agent open a session channel, nothing else. Every other write action
 * must name its resources.
 */
export const NO_RESOURCE_LEVEL_WRITES: readonly string[] = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

const READ_VERBS = /^(Get|List|Describe|BatchGet|BatchCheck|Head|Lookup|Search|View|Query|Select)/;

/** Whether an IAM action only reads. A wildcard action counts as a write unless its verb prefix is a read verb. */
export function isReadOnlyAction(action: string): boolean {
    if (action === "*") {
        return false;
    }
    const verb = action.split(":")[1] ?? "";
    return READ_VERBS.test(verb);
}

/** A write action allowed on a resource pattern that is too broad. */
export interface WildcardWrite {
    sid?: string;
    action: string;
    resource: string;
    reason: string;
}

/**
 * Every `Allow` of a write action on a wildcard resource in a policy document (JSON text or parsed).
 *
 * Flagged: `NotAction`/`NotResource` allows; `Resource: "*"` (except for `NO_RESOURCE_LEVEL_WRITES`);
 * an ARN with `*` in its partition, service, region or account field, or whose resource part is
 * just `*`; and a type-wide pattern such as `instance/*` in a statement without a `Condition` (a
 * create action needs one for the resource it creates, but it must then be narrowed by a condition).
 * Trust policies (statements with a `Principal`) are skipped: they grant no actions to the role.
 */
export function findWildcardWrites(policy: string | PolicyDocument): WildcardWrite[] {
    const doc: PolicyDocument = typeof policy === "string" ? JSON.parse(policy) : policy;
    const statements = Array.isArray(doc.Statement) ? doc.Statement : [doc.Statement as unknown as PolicyStatement];
    const found: WildcardWrite[] = [];
    for (const st of statements) {
        if (st.Effect !== "Allow" || st.Principal !== undefined) {
            continue;
        }
        const sid = st.Sid;
        if (st.NotAction !== undefined || st.NotResource !== undefined) {
            found.push({ sid, action: String(st.NotAction ?? st.Action), resource: String(st.NotResource ?? st.Resource), reason: "NotAction/NotResource allow" });
            continue;
        }
        const writes = toArray(st.Action).filter((a) => !isReadOnlyAction(a));
        for (const action of writes) {
            for (const resource of toArray(st.Resource)) {
                const reason = wildcardReason(resource, st.Condition !== undefined && Object.keys(st.Condition).length > 0);
                if (reason && !(resource === "*" && NO_RESOURCE_LEVEL_WRITES.includes(action))) {
                    found.push({ sid, action, resource, reason });
                }
            }
        }
    }
    return found;
}

function wildcardReason(resource: string, conditioned: boolean): string | undefined {
    if (resource === "*") {
        return "Resource is *";
    }
    const parts = resource.split(":");
    if (parts[0] !== "arn" || parts.length < 6) {
        return "not an ARN";
    }
    const [, partition, service, region, account] = parts;
    if ([partition, service, region, account].some((p) => p!.includes("*"))) {
        return "wildcard partition, service, region or account";
    }
    const rest = parts.slice(5).join(":");
    if (rest === "*") {
        return "resource part is *";
    }
    const typeWide = /^[A-Za-z0-9-]+[/:]\*$/.test(rest);
    if (typeWide && !conditioned) {
        return "type-wide resource without a condition";
    }
    return undefined;
}

function toArray<T>(v: T | T[] | undefined): T[] {
    return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Where the fleet lives; the prefix of every ARN it builds. */
export interface AwsScope {
    partition: string;
    region: string;
    accountId: string;
}

function ec2Arn(s: AwsScope, resource: string): string {
    return `arn:${s.partition}:ec2:${s.region}:${s.accountId}:${resource}`;
}

/** The ARN pattern of every parameter under `prefix` (which starts and ends with `/`). */
export function parameterArnPattern(s: AwsScope, prefix: string): string {
    return `arn:${s.partition}:ssm:${s.region}:${s.accountId}:parameter${prefix}*`;
}

/** The ARN of a launch template. */
export function launchTemplateArn(s: AwsScope, launchTemplateId: string): string {
    return ec2Arn(s, `launch-template/${launchTemplateId}`);
}

/** The policy variable IAM fills in with the ARN of the calling instance (EC2 instance-profile credentials only). */
const SOURCE_INSTANCE_ARN = "${ec2:SourceInstanceARN}";

/** Trust policy letting a service principal assume the role. */
export function assumeRolePolicy(service: "ec2.amazonaws.com" | "lambda.amazonaws.com"): PolicyDocument {
    return {
        Version: "2012-10-17",
        Statement: [{ Effect: "Allow", Principal: { Service: service }, Action: "sts:AssumeRole" }],
    };
}

/** Inputs of the runner instance role's policy. */
export interface InstancePolicyInputs extends AwsScope {
    /** JIT-config parameter prefix, `/strata/<stack>/jit/`. */
    paramPrefix: string;
    /** The fleet's runner log group. */
    logGroupArn: string;
}

/**
 * Policy of the runner instance role: only what the runner itself needs. A job on the instance can reach these
 * credentials (IMDS, and the runner user is in the docker group), so the role holds no registry or other AWS
 * access at all: jobs push with the GitHub OIDC roles (components/github.ts), never with the instance's rights.
 * The instance ends itself by shutting down (instance-initiated shutdown behaviour `terminate`, set in the launch
 * template and at launch), which needs no IAM permission, so the role cannot terminate any instance.
 */
export function instancePolicy(i: InstancePolicyInputs): PolicyDocument {
    const statements: PolicyStatement[] = [
        {
            // The scaler tags each JIT parameter with the instance ARN; only that instance may read or delete it.
            Sid: "ReadAndDeleteOwnJitConfig",
            Effect: "Allow",
            Action: ["ssm:GetParameter", "ssm:DeleteParameter"],
            Resource: parameterArnPattern(i, i.paramPrefix),
            Condition: { StringEquals: { [`ssm:resourceTag/${INSTANCE_ARN_TAG_KEY}`]: SOURCE_INSTANCE_ARN } },
        },
        {
            Sid: "WriteFleetLogs",
            Effect: "Allow",
            Action: ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            Resource: `${i.logGroupArn}:*`,
        },
        {
            // Session Manager instead of SSH, without AmazonSSMManagedInstanceCore's ssm:GetParameter(s) on "*".
            Sid: "SessionManager",
            Effect: "Allow",
            Action: [...NO_RESOURCE_LEVEL_WRITES],
            Resource: "*",
        },
    ];
    return { Version: "2012-10-17", Statement: statements };
}

/** Inputs of the scaler Lambdas' policies. */
export interface ScalerPolicyInputs extends AwsScope {
    poolNames: string[];
    /** JIT-config parameter prefix, `/strata/<stack>/jit/`. */
    paramPrefix: string;
    /** Prefix of the scaler's state documents (ledger, breaker, interruptions, re-runs), `/strata/<stack>/state/`. */
    statePrefix: string;
    logGroupArn: string;
    /** Secrets the function may read. */
    secretArns: string[];
    /** ARNs of the pools' FIFO scale-up queues. */
    queueArns: string[];
    /** ARN of the queue that wakes the consumer. */
    wakeQueueArn: string;
}

/** Extra inputs of the scale-up consumer (the only launcher). */
export interface LaunchPolicyInputs extends ScalerPolicyInputs {
    launchTemplateIds: string[];
    subnetIds: string[];
    securityGroupIds: string[];
    imageIds: string[];
    instanceRoleArn: string;
    /** Whether any pool uses Spot (adds the spot request resource and the Spot service-linked role). */
    spot: boolean;
}

function describeStatement(): PolicyStatement {
    // DescribeInstances has no resource-level permissions.
    return { Sid: "DescribeFleet", Effect: "Allow", Action: "ec2:DescribeInstances", Resource: "*" };
}

function terminatePoolInstancesStatement(i: ScalerPolicyInputs): PolicyStatement {
    return {
        Sid: "TerminatePoolInstances",
        Effect: "Allow",
        Action: "ec2:TerminateInstances",
        Resource: ec2Arn(i, "instance/*"),
        // Only the pool tag: the scaler sets it in the RunInstances request itself, so it is present
        // whether or not request tags replace the launch template's instance tags.
        Condition: { StringEquals: { [`aws:ResourceTag/${POOL_TAG_KEY}`]: [...i.poolNames] } },
    };
}

function lambdaLogsStatement(i: ScalerPolicyInputs): PolicyStatement {
    return { Sid: "WriteOwnLogs", Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: `${i.logGroupArn}:*` };
}

function secretsStatement(i: ScalerPolicyInputs): PolicyStatement {
    return { Sid: "ReadScalerSecrets", Effect: "Allow", Action: "secretsmanager:GetSecretValue", Resource: [...i.secretArns] };
}

function ssmPathArn(i: AwsScope, prefix: string): string {
    return `arn:${i.partition}:ssm:${i.region}:${i.accountId}:parameter${prefix.replace(/\/$/, "")}`;
}

/** The state documents: `actions` on every parameter under the state prefix (and on the path itself for GetParametersByPath). */
function stateStatement(i: ScalerPolicyInputs, sid: string, actions: string[]): PolicyStatement {
    const byPath = actions.includes("ssm:GetParametersByPath");
    return { Sid: sid, Effect: "Allow", Action: actions, Resource: [...(byPath ? [ssmPathArn(i, i.statePrefix)] : []), parameterArnPattern(i, i.statePrefix)] };
}

/**
 * Policy of the webhook Lambda: enqueue into the pools' queues and wake the consumer; claim jobs in the
 * ledger and read interruption records; on `completed`, take back a booting instance (delete its JIT
 * parameter as the claim, terminate it). It cannot launch, pass a role or read any JIT config.
 */
export function webhookPolicy(i: ScalerPolicyInputs): PolicyDocument {
    return {
        Version: "2012-10-17",
        Statement: [
            { Sid: "EnqueueJobs", Effect: "Allow", Action: "sqs:SendMessage", Resource: [...i.queueArns, i.wakeQueueArn] },
            stateStatement(i, "JobLedgerAndReruns", ["ssm:PutParameter", "ssm:GetParameter", "ssm:DeleteParameter"]),
            { Sid: "ClaimJitConfigOfCancelledJob", Effect: "Allow", Action: "ssm:DeleteParameter", Resource: parameterArnPattern(i, i.paramPrefix) },
            describeStatement(),
            terminatePoolInstancesStatement(i),
            secretsStatement(i),
            lambdaLogsStatement(i),
        ],
    };
}

/** Policy of the scale-up consumer, the only launcher: launch from the fleet's templates only, hand out JIT configs, serve the queues. */
export function scaleUpPolicy(i: LaunchPolicyInputs): PolicyDocument {
    const templateArns = i.launchTemplateIds.map((id) => launchTemplateArn(i, id));
    const created = ["instance/*", "volume/*", "network-interface/*", ...(i.spot ? ["spot-instances-request/*"] : [])].map((r) => ec2Arn(i, r));
    const statements: PolicyStatement[] = [
        {
            // Every resource RunInstances touches is either one of ours (template, subnet, security group,
            // AMI) or created by this call; the ec2:LaunchTemplate condition is evaluated for all of them.
            Sid: "RunInstancesFromStrataTemplatesOnly",
            Effect: "Allow",
            Action: "ec2:RunInstances",
            Resource: [
                ...templateArns,
                ...i.subnetIds.map((id) => ec2Arn(i, `subnet/${id}`)),
                ...i.securityGroupIds.map((id) => ec2Arn(i, `security-group/${id}`)),
                ...i.imageIds.map((id) => `arn:${i.partition}:ec2:${i.region}::image/${id}`),
                `arn:${i.partition}:ec2:${i.region}::snapshot/*`,
                ...created.filter((arn) => !arn.includes(":spot-instances-request/")),
            ],
            Condition: { ArnEquals: { "ec2:LaunchTemplate": templateArns } },
        },
        // ec2:LaunchTemplate does not apply to the spot request a spot launch creates (Service Authorization
        // Reference; the IAM simulation in test/iam-simulation.test.ts denies it), so it gets its own statement.
        // The instance of the same request still needs the statement above.
        ...(i.spot ? [{
            Sid: "SpotRequestsOfTheseLaunches",
            Effect: "Allow" as const,
            Action: "ec2:RunInstances",
            Resource: ec2Arn(i, "spot-instances-request/*"),
            Condition: { StringEquals: { "ec2:Region": i.region } },
        }] : []),
        {
            Sid: "TagOnLaunchOnly",
            Effect: "Allow",
            Action: "ec2:CreateTags",
            Resource: created,
            Condition: { StringEquals: { "ec2:CreateAction": "RunInstances" } },
        },
        terminatePoolInstancesStatement(i),
        {
            Sid: "ReleaseJobTagsOfPoolInstances",
            Effect: "Allow",
            Action: "ec2:DeleteTags",
            Resource: ec2Arn(i, "instance/*"),
            Condition: {
                StringEquals: { [`aws:ResourceTag/${POOL_TAG_KEY}`]: [...i.poolNames] },
                "ForAllValues:StringEquals": { "aws:TagKeys": [...RELEASABLE_TAG_KEYS] },
            },
        },
        describeStatement(),
        {
            Sid: "PassInstanceRoleToEc2",
            Effect: "Allow",
            Action: "iam:PassRole",
            Resource: i.instanceRoleArn,
            Condition: { StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } },
        },
        {
            // Write-only on JIT configs: it creates them (tagged with the instance ARN), never reads or deletes one.
            Sid: "WriteJitConfigs",
            Effect: "Allow",
            Action: ["ssm:PutParameter", "ssm:AddTagsToResource"],
            Resource: parameterArnPattern(i, i.paramPrefix),
        },
        stateStatement(i, "LedgerBreakerAndInterruptions", ["ssm:GetParameter", "ssm:PutParameter", "ssm:GetParametersByPath"]),
        {
            Sid: "ServePoolQueues",
            Effect: "Allow",
            Action: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
            Resource: [...i.queueArns],
        },
        {
            // The wake queue's event source mapping polls as the function.
            Sid: "WakeQueueEventSource",
            Effect: "Allow",
            Action: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            Resource: i.wakeQueueArn,
        },
        secretsStatement(i),
        lambdaLogsStatement(i),
    ];
    if (i.spot) {
        statements.push({
            // Spot launches fail until the account has this service-linked role; allow creating exactly it.
            Sid: "CreateSpotServiceLinkedRole",
            Effect: "Allow",
            Action: "iam:CreateServiceLinkedRole",
            Resource: `arn:${i.partition}:iam::${i.accountId}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot`,
            Condition: { StringEquals: { "iam:AWSServiceName": "spot.amazonaws.com" } },
        });
    }
    return { Version: "2012-10-17", Statement: statements };
}

/** Policy of the interruption handler: look the instance up, record the interruption, remove the idle runner (GitHub). */
export function interruptionPolicy(i: ScalerPolicyInputs): PolicyDocument {
    return {
        Version: "2012-10-17",
        Statement: [describeStatement(), stateStatement(i, "RecordInterruptions", ["ssm:PutParameter"]), secretsStatement(i), lambdaLogsStatement(i)],
    };
}

/** Policy of the housekeeping Lambda: reap overdue or orphaned pool instances and stale JIT configs, reconcile missed jobs, prune state. */
export function housekeepingPolicy(i: ScalerPolicyInputs): PolicyDocument {
    return {
        Version: "2012-10-17",
        Statement: [
            describeStatement(),
            terminatePoolInstancesStatement(i),
            {
                // Lists (without decryption) and deletes; never reads a JIT config's value.
                Sid: "ReapJitConfigs",
                Effect: "Allow",
                Action: ["ssm:GetParametersByPath", "ssm:DeleteParameter"],
                Resource: [ssmPathArn(i, i.paramPrefix), parameterArnPattern(i, i.paramPrefix)],
            },
            stateStatement(i, "ReconcileAndPruneState", ["ssm:GetParametersByPath", "ssm:PutParameter", "ssm:DeleteParameter"]),
            { Sid: "EnqueueMissedJobs", Effect: "Allow", Action: "sqs:SendMessage", Resource: [...i.queueArns] },
            secretsStatement(i),
            lambdaLogsStatement(i),
        ],
    };
}
