#!/usr/bin/env python3
"""An HTTP proxy in front of the moto server, for the AWS tests. Two jobs:

1. Fault injection: with probability --fault-rate a request is answered, without being
   forwarded, by the throttling or internal-error response the service would give
   (EC2 RequestLimitExceeded 503, IAM/STS/ELBv2 Throttling 400, EKS
   TooManyRequestsException 429, S3 SlowDown 503, or each service's 500). Because the
   request never reached moto, retrying it is always safe. GET /__faults returns how many
   were injected, per service.

2. A recorded-response double for the two calls moto does not implement, answered with
   the response shapes the AWS API references document:
   - iam SimulatePrincipalPolicy: every action "allowed", except those in --deny
     ("implicitDeny");
   - service-quotas GetServiceQuota for eks/L-6D54EA21 (managed node groups per
     cluster): value --quota ("none": not answered, so moto's NoSuchResource comes
     back, as from an account where the quota cannot be read). moto knows only VPC
     quotas.
   - EKS's slow phases, which moto skips (its clusters and node groups are ACTIVE at
     once): with --creating N the first N DescribeCluster / DescribeNodegroup reads of
     each name say CREATING; UpdateClusterVersion (moto: 404) is answered with the
     documented Update object, and the cluster then reads UPDATING for N reads and
     reports the new version. GET /__eks shows the version updates requested.
   - EKS DescribeClusterVersions (moto: 404), answered from EKS_VERSIONS below: each
     minor's release, end of standard support and end of extended support dates as the
     Amazon EKS User Guide's "Amazon EKS Kubernetes release calendar" lists them
     (https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html; 1.28-1.35,
     read 2026-11-26; 1.36 was not listed in the sources read, so it is "not offered"),
     with versionStatus STANDARD_SUPPORT / EXTENDED_SUPPORT / UNSUPPORTED (and the older
     status field standard-support / extended-support / unsupported) judged against
     --today (default: the clock). Without includeAll the unsupported ones are left out.
   - EKS upgrade policy (moto drops it): CreateCluster's upgradePolicy is kept and
     DescribeCluster shows it, EXTENDED when none was given (EKS API Reference,
     UpgradePolicyRequest: "If you don't specify, EXTENDED"); UpdateClusterConfig with
     upgradePolicy alone is answered with the Update object and changes it.
   - UpdateClusterVersion as EKS judges it: one minor version up from the running one,
     never down ("Unsupported Kubernetes minor version update from 1.32 to 1.34",
     InvalidParameterException), anything else applied as above.
   - UpdateNodegroupVersion (moto: 404): the node group then reports the new version;
     a version newer than its cluster's is refused (InvalidParameterException).
     GET /__eks lists every update requested, in order, under "log".
   - EKS add-ons (moto: 404): CreateAddon, DescribeAddon, ListAddons, UpdateAddon,
     DeleteAddon, kept here per cluster with the API reference's shapes; an add-on reads
     CREATING for --creating reads, then ACTIVE; creating one twice is
     ResourceInUseException, an unknown one ResourceNotFoundException.
   - s3 GetBucketVersioning: moto's answer has the root element GetBucketVersioningResponse
     where S3 sends VersioningConfiguration, which the AWS SDK for Rust cannot parse; it is
     renamed on the way back.
3. Names AWS refuses and moto takes: CreateLoadBalancer and CreateTargetGroup names that
   ELBv2 documents as invalid (over 32 characters, anything but letters, digits and
   hyphens, a leading or trailing hyphen, "--" (the API's target group pattern is
   (?!.*--)(?!^-)(?!.*-$)^[A-Za-z0-9-]+$), a load balancer name starting with
   "internal-"), and CreateRole names outside IAM's model (at most 64 of [\w+=,.@-]),
   are answered with the ValidationError (400, Sender) AWS sends, without reaching moto.
   So an end-to-end test fails the way a real account would if byoc ever derives such a
   name again.
   Likewise DeleteLoadBalancer of an NLB a VPC endpoint service still lists is refused
   with ResourceInUse (400), as ELBv2 refuses it; moto deletes it.
   Everything else goes to moto unchanged.
   - EKS access entries (CreateAccessEntry, DescribeAccessEntry, ListAccessEntries,
     DeleteAccessEntry, AssociateAccessPolicy, ListAssociatedAccessPolicies) and the
     cluster's accessConfig, which moto lacks: kept per cluster from CreateCluster's
     accessConfig (default CONFIG_MAP), shown in DescribeCluster, moved by UpdateClusterConfig
     one step at a time (CONFIG_MAP -> API_AND_CONFIG_MAP -> API) as EKS allows, and judged as
     the EKS API Reference documents: InvalidRequestException on a CONFIG_MAP cluster,
     ResourceInUseException for a second entry of a principal, InvalidParameterException
     for a principal that is not an IAM role or user or a bad accessScope,
     ResourceNotFoundException for an unknown policy. With bootstrapClusterCreatorAdminPermissions
     (EKS's default) the creator gets an untagged entry of its own, as EKS makes it.
5. Latency: with --delay SECONDS (or after POST /__delay with a body of seconds, "0" to
   stop), every call is held that long before it is answered, as from a slow or distant
   endpoint, so a test can show that a slow store stalls nobody but its caller.
6. --real-aws: AWS behaviours moto does not show, reproduced from AWS's documented
   answers (the README's "What the moto front's real-AWS mode reproduces" lists them with
   their sources):
   - a bucket in another region than the request's signing region answers every request
     but CreateBucket with 301 PermanentRedirect, the S3 XML error and the
     x-amz-bucket-region header (Amazon S3 API Reference, "Error responses", and
     "HeadBucket": x-amz-bucket-region); moto answers from any region;
   - a bucket whose policy denies Principal "*" an action answers that action with 403
     AccessDenied (Amazon S3 User Guide, "Bucket policy examples": an explicit deny
     overrides any allow); moto stores policies but never enforces them;
   - EKS ListClusters and ListNodegroups come in pages of --page-size (default 1) with a
     nextToken (EKS API Reference, ListClusters: maxResults 1-100, default 100), so a
     reader that stops at the first page misses resources with two of them.
   - eventual consistency after a create (EC2 API Reference, "Eventual consistency in the
     Amazon EC2 API"; IAM User Guide, "Changes that I make are not always immediately
     visible"): for --propagation N calls (default 2) after each create, an EC2 call that
     uses the new id (not a Describe* or Delete*) answers Invalid<Kind>ID.NotFound, and an
     EKS CreateCluster / CreateNodegroup naming a role just created answers
     InvalidParameterException "Role with arn: ..., could not be assumed because it does
     not exist or the trusted entity is not correct", as EKS does; an IAM CreateRole whose
     trust policy names an OIDC provider just created answers MalformedPolicyDocument
     "Invalid principal in policy". GET /__propagation counts what was injected.
7. Also in --real-aws mode (the README's table gives each source): --linger N, the
   DependencyViolation answers while a deleted load balancer's or EKS cluster's network
   interfaces linger (GET /__linger counts them); --linger-seconds S, those interfaces
   listed by DescribeNetworkInterfaces for S seconds, refusing the deletions meanwhile;
   --fail-node-group NAME, a node group
   that stays CREATE_FAILED until deleted; DeleteObjects refused per object by a bucket
   policy that denies s3:DeleteObjectVersion. In every mode: the endpoint-service
   connection calls moto lacks (POST /__connect with a service id connects a consumer's
   endpoint; GET /__reaches/<service id> says which NLB such an endpoint reaches in each
   zone: one per zone, the service's first there), and with --evaluate-policies SimulatePrincipalPolicy evaluates the caller's
   inline policies from moto's IAM with the request's context entries (GET /__simulations
   lists what was asked).
4. A request log: every call is recorded as the IAM action it needs and the resource it
   acts on, as AWS would authorize it (`iam:CreateRole` on
   `arn:aws:iam::123456789012:role/byoc/prod/clusters/x`, with the
   `iam:PermissionsBoundary` the request carries; `s3:GetObject` on
   `arn:aws:s3:::bucket/key`; `eks:UpdateNodegroupConfig` ...). IAM role paths are learned
   from the CreateRole calls that pass through. GET /__calls returns the log (a JSON
   list), POST /__calls/reset empties it. The least-privilege test checks each entry
   against policies/aws/agent.json.

Usage: faults.py --port P --upstream http://127.0.0.1:M --owner PID
                 [--fault-rate 0.2] [--seed 1] [--deny a,b] [--quota 50] [--creating N]
                 [--delay 0.5]
                 [--real-aws] [--page-size 1] [--propagation 2] [--linger N]
                 [--fail-node-group NAME] [--evaluate-policies] [--today YYYY-MM-DD]
Listens on 127.0.0.1 only; exits when the owner process is gone.
"""
import argparse
import calendar
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOCK = threading.Lock()
RNG = None
INJECTED = {}
FAILING = {}  # --fail-node-group: name -> "failing" until deleted, then "replaced"
READS = {}  # (kind, name) -> describe reads answered so far
UPDATES = {}  # cluster name -> {"version": v, "reads": reads left in UPDATING}
SIMULATIONS = []  # each SimulatePrincipalPolicy asked: {"actions", "context"}
EKS_LOG = []  # every version or policy update requested, in order
POLICIES = {}  # cluster name -> upgradePolicy.supportType
NG_VERSIONS = {}  # (cluster, node group) -> version set by UpdateNodegroupVersion
ADDONS = {}  # (cluster, addon name) -> the Addon object
# Amazon EKS Kubernetes release calendar (see the docstring): minor -> (release, end of
# standard support, end of extended support).
EKS_VERSIONS = {
    "1.28": ("2023-09-26", "2024-11-26", "2025-11-26"),
    "1.29": ("2024-01-23", "2025-03-23", "2026-03-23"),
    "1.30": ("2024-05-23", "2025-07-23", "2026-07-23"),
    "1.31": ("2024-09-26", "2025-11-26", "2026-11-26"),
    "1.32": ("2025-01-23", "2026-03-23", "2027-03-23"),
    "1.33": ("2025-05-29", "2026-07-29", "2027-07-29"),
    "1.34": ("2025-10-02", "2026-12-02", "2027-12-02"),
    "1.35": ("2026-01-27", "2027-03-27", "2028-03-27"),
}
CALLS = []  # the request log: {"action", "resource", "boundary"?}
ROLE_PATHS = {}  # IAM role name -> path, from the CreateRole calls seen
ACCOUNT = "123456789012"  # moto's account
DELAY = [0.0]  # seconds every call is held before its answer (--delay, POST /__delay)


def eks_action(method, path):
    """The EKS action of a REST call (the API reference's method and URI)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    n = len(parts)
    if parts[:1] == ["cluster-versions"]:
        return "DescribeClusterVersions"
    if parts[:1] == ["tags"]:
        return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method, "Unknown")
    if parts[:1] != ["clusters"]:
        return "Unknown"
    if n == 1:
        return {"GET": "ListClusters", "POST": "CreateCluster"}.get(method, "Unknown")
    if n == 2:
        return {"GET": "DescribeCluster", "DELETE": "DeleteCluster"}.get(method, "Unknown")
    if n == 3 and parts[2] == "node-groups":
        return {"GET": "ListNodegroups", "POST": "CreateNodegroup"}.get(method, "Unknown")
    if n == 3 and parts[2] == "update-config":
        return "UpdateClusterConfig"
    if n == 3 and parts[2] == "updates":
        return {"GET": "ListUpdates", "POST": "UpdateClusterVersion"}.get(method, "Unknown")
    if n == 4 and parts[2] == "node-groups":
        return {"GET": "DescribeNodegroup", "DELETE": "DeleteNodegroup"}.get(method, "Unknown")
    if n == 3 and parts[2] == "access-entries":
        return {"GET": "ListAccessEntries", "POST": "CreateAccessEntry"}.get(method, "Unknown")
    if n == 4 and parts[2] == "access-entries":
        return {"GET": "DescribeAccessEntry", "DELETE": "DeleteAccessEntry", "POST": "UpdateAccessEntry"}.get(method, "Unknown")
    if n == 5 and parts[2] == "access-entries" and parts[4] == "access-policies":
        return {"GET": "ListAssociatedAccessPolicies", "POST": "AssociateAccessPolicy"}.get(method, "Unknown")
    if n == 5 and parts[2] == "node-groups" and parts[4] == "update-config":
        return "UpdateNodegroupConfig"
    if n == 5 and parts[2] == "node-groups" and parts[4] == "update-version":
        return "UpdateNodegroupVersion"
    if parts[:1] == ["cluster-versions"]:
        return "DescribeClusterVersions"
    if n == 3 and parts[2] == "addons":
        return {"GET": "ListAddons", "POST": "CreateAddon"}.get(method, "Unknown")
    if n == 4 and parts[2] == "addons":
        return {"GET": "DescribeAddon", "DELETE": "DeleteAddon"}.get(method, "Unknown")
    if n == 5 and parts[2] == "addons" and parts[4] == "update":
        return "UpdateAddon"
    return "Unknown"


S3_BUCKET_READS = {"tagging": "GetBucketTagging", "versioning": "GetBucketVersioning",
                   "publicAccessBlock": "GetBucketPublicAccessBlock", "encryption": "GetEncryptionConfiguration",
                   "location": "GetBucketLocation", "policy": "GetBucketPolicy", "versions": "ListBucketVersions",
                   "lifecycle": "GetLifecycleConfiguration"}
S3_BUCKET_WRITES = {"tagging": "PutBucketTagging", "versioning": "PutBucketVersioning",
                    "publicAccessBlock": "PutBucketPublicAccessBlock", "encryption": "PutEncryptionConfiguration",
                    "policy": "PutBucketPolicy", "lifecycle": "PutLifecycleConfiguration"}


def s3_call(method, path):
    """(action, resource) of a path-style S3 REST call."""
    split = urllib.parse.urlsplit(path)
    parts = split.path.lstrip("/").split("/", 1)
    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    if not bucket:
        return "ListAllMyBuckets", "*"
    if key:
        arn = f"arn:aws:s3:::{bucket}/{urllib.parse.unquote(key)}"
        return {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method, "Unknown"), arn
    arn = f"arn:aws:s3:::{bucket}"
    sub = next((q for q in query if q in S3_BUCKET_READS or q in S3_BUCKET_WRITES or q == "delete"), None)
    if method in ("GET", "HEAD"):
        return (S3_BUCKET_READS.get(sub, "Unknown") if sub else "ListBucket"), arn
    if method == "PUT":
        return (S3_BUCKET_WRITES.get(sub, "Unknown") if sub else "CreateBucket"), arn
    if method == "DELETE":
        return ("DeleteBucket" if not sub else "Unknown"), arn
    if method == "POST" and sub == "delete":
        return "DeleteObject", arn + "/*"
    return "Unknown", arn


def record(service, method, path, headers, body):
    """Appends the call to the request log, as AWS would authorize it."""
    entry = {}
    if service == "eks":
        entry = {"action": "eks:" + eks_action(method, path), "resource": "*"}
    elif service == "s3":
        action, resource = s3_call(method, path)
        entry = {"action": "s3:" + action, "resource": resource}
    elif headers.get("X-Amz-Target"):
        entry = {"action": service + ":" + headers["X-Amz-Target"].rsplit(".", 1)[-1], "resource": "*"}
    else:
        form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        one = lambda k: form.get(k, [""])[0]
        action = one("Action") or "Unknown"
        entry = {"action": f"{service}:{action}", "resource": "*"}
        if service == "iam":
            role = one("RoleName")
            if action == "CreateRole" and role:
                with LOCK:
                    ROLE_PATHS[role] = one("Path") or "/"
            if role:
                with LOCK:
                    path_of = ROLE_PATHS.get(role, one("Path") or "/")
                entry["resource"] = f"arn:aws:iam::{ACCOUNT}:role{path_of}{role}"
            elif one("PolicyArn"):
                entry["resource"] = one("PolicyArn")
            elif one("OpenIDConnectProviderArn"):
                entry["resource"] = one("OpenIDConnectProviderArn")
            if action in ("CreateRole", "PutRolePermissionsBoundary"):
                entry["boundary"] = one("PermissionsBoundary")
    with LOCK:
        CALLS.append(entry)


def region_of(headers):
    m = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else "us-east-1"


BUCKET_REGION = {}  # bucket -> region, learned from moto's GetBucketLocation


def upstream(method, path):
    """(status, body) of a plain request to moto (moto checks no signature)."""
    up = urllib.parse.urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
    conn.request(method, path, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def s3_error(status, code, message, bucket, extra_headers=None, extra_xml=""):
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra_xml}'
            f"<BucketName>{bucket}</BucketName><RequestId>real-aws-mode</RequestId><HostId>real-aws-mode</HostId></Error>")
    headers = {"Content-Type": "application/xml"}
    headers.update(extra_headers or {})
    return status, headers, body


def action_matches(pattern, action):
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return action.lower().startswith(pattern[:-1].lower())
    return pattern.lower() == action.lower()


def delete_result_denied(body):
    """S3's answer to a DeleteObjects whose objects a bucket policy denies deleting: 200,
    and an <Error> per object in the DeleteResult (Amazon S3 API Reference, DeleteObjects:
    "the result of the delete operation on each object ... Error")."""
    objects = re.findall(rb"<Object>(.*?)</Object>", body, re.S)
    errors = ""
    for o in objects:
        key = re.search(rb"<Key>(.*?)</Key>", o, re.S)
        version = re.search(rb"<VersionId>(.*?)</VersionId>", o, re.S)
        errors += (f"<Error><Key>{key.group(1).decode() if key else ''}</Key>"
                   + (f"<VersionId>{version.group(1).decode()}</VersionId>" if version else "")
                   + "<Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
    return 200, {"Content-Type": "application/xml"}, (
        '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{errors}</DeleteResult>")


def real_s3(method, path, headers, body=b""):
    """The answer real S3 gives where moto's differs (redirect, explicit deny), or None."""
    action, _ = s3_call(method, path)
    bucket = urllib.parse.urlsplit(path).path.lstrip("/").split("/", 1)[0]
    if not bucket or action == "CreateBucket":
        return None
    with LOCK:
        region = BUCKET_REGION.get(bucket)
    if region is None:
        status, data = upstream("GET", f"/{bucket}?location")
        if status != 200:
            return None
        m = re.search(rb"<LocationConstraint[^>]*>([^<]*)</LocationConstraint>", data)
        region = (m.group(1).decode() if m else "") or "us-east-1"
        with LOCK:
            BUCKET_REGION[bucket] = region
    if region != region_of(headers):
        return s3_error(301, "PermanentRedirect",
                        "The bucket you are attempting to access must be addressed using the specified endpoint. "
                        "Please send all future requests to this endpoint.", bucket,
                        {"x-amz-bucket-region": region}, f"<Endpoint>{bucket}.s3.{region}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket>")
    status, data = upstream("GET", f"/{bucket}?policy")
    if status == 200:
        try:
            statements = json.loads(data).get("Statement", [])
        except ValueError:
            statements = []
        for st in statements if isinstance(statements, list) else [statements]:
            principal = st.get("Principal")
            everyone = principal == "*" or (isinstance(principal, dict) and principal.get("AWS") in ("*", ["*"]))
            actions = st.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if st.get("Effect") == "Deny" and everyone and any(action_matches(a, "s3:" + action) for a in actions):
                return s3_error(403, "AccessDenied", "Access Denied", bucket)
            # DeleteObjects is judged per object (s3:DeleteObject, or s3:DeleteObjectVersion
            # for a version) and answered 200 with an error per refused object.
            if (st.get("Effect") == "Deny" and everyone and method == "POST" and action == "DeleteObject"
                    and any(action_matches(a, "s3:DeleteObjectVersion") for a in actions)):
                return delete_result_denied(body)
    return None


FRESH = {}  # id, role name or OIDC provider ARN just created -> failing answers left
PROPAGATED = {"injected": 0}
EC2_CREATED = {"CreateVpc": "vpcId", "CreateSubnet": "subnetId", "CreateInternetGateway": "internetGatewayId",
               "CreateRouteTable": "routeTableId", "CreateSecurityGroup": "groupId", "AllocateAddress": "allocationId",
               "CreateNatGateway": "natGatewayId"}
EC2_NOT_FOUND = {"vpc-": ("InvalidVpcID.NotFound", "vpc ID"), "subnet-": ("InvalidSubnetID.NotFound", "subnet ID"),
                 "igw-": ("InvalidInternetGatewayID.NotFound", "internetGateway ID"),
                 "rtb-": ("InvalidRouteTableID.NotFound", "routeTable ID"), "sg-": ("InvalidGroup.NotFound", "security group"),
                 "eipalloc-": ("InvalidAllocationID.NotFound", "allocation ID"), "nat-": ("InvalidNatGatewayID.NotFound", "nat gateway ID")}


def learn_created(service, form, json_body, data):
    """Marks what a successful create made as not yet visible to the next calls."""
    if ARGS.propagation <= 0:
        return
    fresh = []
    action = form.get("Action", [""])[0]
    if service == "ec2" and action in EC2_CREATED:
        m = re.search(rf"<{EC2_CREATED[action]}>([^<]+)<".encode(), data)
        if m:
            fresh.append(m.group(1).decode())
    elif service == "iam" and action == "CreateRole":
        fresh.append("role/" + form.get("RoleName", [""])[0])
    elif service == "iam" and action == "CreateOpenIDConnectProvider":
        m = re.search(rb"<OpenIDConnectProviderArn>([^<]+)<", data)
        if m:
            fresh.append(m.group(1).decode())
    with LOCK:
        for f in fresh:
            FRESH[f] = ARGS.propagation


def take_fresh(key):
    with LOCK:
        if FRESH.get(key, 0) > 0:
            FRESH[key] -= 1
            PROPAGATED["injected"] += 1
            return True
    return False


def not_visible_yet(service, method, path, form, json_body):
    """The answer AWS gives a call that uses something created moments ago, or None."""
    if ARGS.propagation <= 0:
        return None
    action = form.get("Action", [""])[0]
    if service == "ec2" and action and not action.startswith(("Describe", "Delete", "Release")) and action not in EC2_CREATED.keys() - {"CreateSubnet", "CreateRouteTable", "CreateSecurityGroup", "CreateNatGateway"}:
        for key, values in form.items():
            for v in values:
                prefix = next((p for p in EC2_NOT_FOUND if v.startswith(p)), None)
                if prefix and take_fresh(v):
                    code, what = EC2_NOT_FOUND[prefix]
                    body = (f"<Response><Errors><Error><Code>{code}</Code><Message>The {what} '{v}' does not exist</Message>"
                            "</Error></Errors><RequestID>real-aws-mode</RequestID></Response>")
                    return 400, {"Content-Type": "text/xml"}, body
    if service == "eks" and method == "POST":
        role = None
        if re.fullmatch(r"/clusters", path):
            role = json_body.get("roleArn")
        elif re.fullmatch(r"/clusters/[^/]+/node-groups", path):
            role = json_body.get("nodeRole")
        if role and take_fresh("role/" + role.rsplit("/", 1)[-1]):
            message = f"Role with arn: {role}, could not be assumed because it does not exist or the trusted entity is not correct"
            return 400, {"Content-Type": "application/json", "x-amzn-ErrorType": "InvalidParameterException"}, json.dumps({"message": message})
    if service == "iam" and action == "CreateRole":
        trust = form.get("AssumeRolePolicyDocument", [""])[0]
        for provider in [k for k in list(FRESH) if k.startswith("arn:") and ":oidc-provider/" in k]:
            if provider in trust and take_fresh(provider):
                body = ('<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
                        "<Code>MalformedPolicyDocument</Code><Message>Invalid principal in policy: \"Federated\":\"" + provider + "\"</Message>"
                        "</Error><RequestId>real-aws-mode</RequestId></ErrorResponse>")
                return 400, {"Content-Type": "text/xml"}, body
    return None


# EKS access entries and the cluster's accessConfig, which moto does not implement: a
# state-keeping double that judges as the EKS API Reference documents (CreateAccessEntry,
# DescribeAccessEntry, ListAccessEntries, DeleteAccessEntry, AssociateAccessPolicy,
# ListAssociatedAccessPolicies; Cluster.accessConfig). Answered in every mode, since no
# apply can go without them.
ACCESS = {}  # cluster name -> {"mode", "bootstrap", "entries": {principal: entry}}
ACCESS_POLICIES = ("AmazonEKSClusterAdminPolicy", "AmazonEKSAdminPolicy", "AmazonEKSEditPolicy", "AmazonEKSViewPolicy")
# What moto's GetCallerIdentity answers for the test credentials: EKS gives the cluster's
# creator an entry of its own unless told not to (bootstrapClusterCreatorAdminPermissions).
CREATOR = f"arn:aws:iam::{ACCOUNT}:user/moto"


def eks_error(status, code, message):
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps({"message": message})


def access_entry(cluster, principal, tags):
    kind = "role" if ":role/" in principal else "user"
    return {"clusterName": cluster, "principalArn": principal, "type": "STANDARD", "kubernetesGroups": [],
            "accessEntryArn": f"arn:aws:eks:us-east-1:{ACCOUNT}:access-entry/{cluster}/{kind}/{ACCOUNT}/{principal.rsplit('/', 1)[-1]}/00000000",
            "createdAt": time.time(), "modifiedAt": time.time(), "tags": tags or {},
            "username": principal, "policies": {}}


def public(entry):
    return {k: v for k, v in entry.items() if k != "policies"}


def eks_access(method, path, body):
    """The answer to an access-entry call or to CreateCluster's accessConfig, or None."""
    split = urllib.parse.urlsplit(path)
    parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
    if parts[:1] != ["clusters"]:
        return None
    doc = {}
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
    if len(parts) == 1 and method == "POST":
        # CreateCluster: remember the access config (EKS's default is CONFIG_MAP, with the
        # creator made admin); moto drops it. Forwarded to moto afterwards.
        access = doc.get("accessConfig") or {}
        mode = access.get("authenticationMode", "CONFIG_MAP")
        if mode not in ("API", "API_AND_CONFIG_MAP", "CONFIG_MAP"):
            return eks_error(400, "InvalidParameterException", f"authenticationMode {mode} is not valid")
        bootstrap = access.get("bootstrapClusterCreatorAdminPermissions", True)
        with LOCK:
            entries = {CREATOR: access_entry(doc.get("name", ""), CREATOR, {})} if bootstrap and mode != "CONFIG_MAP" else {}
            # A name in use is refused by moto; what was recorded for it stays.
            ACCESS.setdefault(doc.get("name", ""), {"mode": mode, "bootstrap": bootstrap, "entries": entries})
        return None
    if len(parts) < 2:
        return None
    cluster = parts[1]
    if len(parts) == 2 and method == "DELETE":
        with LOCK:
            ACCESS.pop(cluster, None)
        return None
    if len(parts) == 3 and parts[2] == "update-config" and method == "POST" and doc.get("accessConfig"):
        want = doc["accessConfig"].get("authenticationMode")
        with LOCK:
            state = ACCESS.get(cluster)
            if state is None:
                return eks_error(404, "ResourceNotFoundException", f"No cluster found for name: {cluster}.")
            # The mode moves one way, one step at a time (EKS User Guide, "Change
            # authentication mode to use access entries").
            steps = {("CONFIG_MAP", "API_AND_CONFIG_MAP"), ("API_AND_CONFIG_MAP", "API")}
            if (state["mode"], want) not in steps:
                return eks_error(400, "InvalidParameterException", f"Unsupported authentication mode update from {state['mode']} to {want}")
            state["mode"] = want
        update = {"id": "recorded-access-update", "status": "Successful", "type": "AccessConfigUpdate", "params": [], "errors": []}
        return 200, {"Content-Type": "application/json"}, json.dumps({"update": update})
    if len(parts) < 3 or parts[2] != "access-entries":
        return None
    with LOCK:
        state = ACCESS.get(cluster)
        if state is None:
            return eks_error(404, "ResourceNotFoundException", f"No cluster found for name: {cluster}.")
        if state["mode"] == "CONFIG_MAP":
            return eks_error(400, "InvalidRequestException",
                             "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation.")
        entries = state["entries"]
        if len(parts) == 3 and method == "POST":
            principal = doc.get("principalArn", "")
            if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+", principal):
                return eks_error(400, "InvalidParameterException", f"The specified principalArn is invalid: {principal}")
            if principal in entries:
                return eks_error(409, "ResourceInUseException", f"The specified access entry resource is already in use on this cluster.")
            entries[principal] = access_entry(cluster, principal, doc.get("tags"))
            return 200, {"Content-Type": "application/json"}, json.dumps({"accessEntry": public(entries[principal])})
        if len(parts) == 3 and method == "GET":
            query = dict(urllib.parse.parse_qsl(split.query))
            names = sorted(entries)
            start = int(query.get("nextToken") or 0)
            size = ARGS.page_size if ARGS.real_aws else 100
            page = {"accessEntries": names[start:start + size]}
            if start + size < len(names):
                page["nextToken"] = str(start + size)
            return 200, {"Content-Type": "application/json"}, json.dumps(page)
        principal = parts[3]
        entry = entries.get(principal)
        if entry is None:
            return eks_error(404, "ResourceNotFoundException", f"The specified principalArn could not be found: {principal}")
        if len(parts) == 4 and method == "GET":
            return 200, {"Content-Type": "application/json"}, json.dumps({"accessEntry": public(entry)})
        if len(parts) == 4 and method == "DELETE":
            del entries[principal]
            return 200, {"Content-Type": "application/json"}, "{}"
        if len(parts) == 5 and parts[4] == "access-policies" and method == "POST":
            policy = doc.get("policyArn", "")
            scope = doc.get("accessScope") or {}
            if not any(policy == f"arn:aws:eks::aws:cluster-access-policy/{p}" for p in ACCESS_POLICIES):
                return eks_error(404, "ResourceNotFoundException", f"The specified policyArn could not be found: {policy}")
            if scope.get("type") not in ("cluster", "namespace") or (scope.get("type") == "namespace") != bool(scope.get("namespaces")):
                return eks_error(400, "InvalidParameterException", "accessScope must be type cluster, or type namespace with namespaces")
            entry["policies"][policy] = {"policyArn": policy, "accessScope": scope, "associatedAt": time.time(), "modifiedAt": time.time()}
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"clusterName": cluster, "principalArn": principal, "associatedAccessPolicy": entry["policies"][policy]})
        if len(parts) == 5 and parts[4] == "access-policies" and method == "GET":
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"clusterName": cluster, "principalArn": principal, "associatedAccessPolicies": list(entry["policies"].values())})


LINGER = {"armed": False, "left": {}, "injected": 0, "listed": 0}  # --linger: resource id -> refusals left
LINGERING_DELETES = {"DeleteSubnet": ("SubnetId", "The subnet '{0}' has dependencies and cannot be deleted."),
                     "DeleteSecurityGroup": ("GroupId", "resource {0} has a dependent object"),
                     "DeleteVpc": ("VpcId", "The vpc '{0}' has dependencies and cannot be deleted."),
                     "DetachInternetGateway": ("VpcId", "Network {0} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway.")}


def lingering(service, method, path, form):
    """--linger N: once a load balancer or an EKS cluster has been deleted, its network
    interfaces stay for a while ("Delete a load balancer", ELB User Guide: the network
    interfaces are released some minutes later; "Delete a cluster", EKS User Guide), and
    EC2 refuses the first N deletions of each subnet, security group and VPC, and each
    gateway detach, with DependencyViolation. moto deletes them at once."""
    if ARGS.linger <= 0:
        return None
    action = form.get("Action", [""])[0]
    if (service == "elasticloadbalancing" and action == "DeleteLoadBalancer") or (
            service == "eks" and method == "DELETE" and re.fullmatch(r"/clusters/[^/]+", path)):
        with LOCK:
            LINGER["armed"] = True
        return None
    if service != "ec2" or action not in LINGERING_DELETES:
        return None
    field, message = LINGERING_DELETES[action]
    rid = form.get(field, [""])[0]
    with LOCK:
        if not LINGER["armed"]:
            return None
        left = LINGER["left"].setdefault((action, rid), ARGS.linger)
        if left <= 0:
            return None
        LINGER["left"][(action, rid)] = left - 1
        LINGER["injected"] += 1
    body = (f"<Response><Errors><Error><Code>DependencyViolation</Code><Message>{message.format(rid)}</Message>"
            "</Error></Errors><RequestID>real-aws-mode</RequestID></Response>")
    return 400, {"Content-Type": "text/xml"}, body


ENIS = {}  # --linger-seconds: interface description -> (interface id, time it goes)


def lingering_interfaces(service, method, path, form):
    """--linger-seconds S: a deleted load balancer's network interfaces (described
    "ELB <type>/<name>/<id>", the ARN after "loadbalancer/") and an EKS cluster's ("Amazon
    EKS <name>") stay S seconds after the deletion ("Delete a Network Load Balancer", ELB
    User Guide: the interfaces are released later; "Delete a cluster", EKS User Guide), are
    listed by DescribeNetworkInterfaces filtered on their description, and until they go
    DeleteSubnet, DeleteSecurityGroup, DeleteVpc and DetachInternetGateway answer
    DependencyViolation (counted in GET /__linger "injected"; "listed" counts the reads
    that found some). moto deletes them at once and lists none."""
    if ARGS.linger_seconds <= 0:
        return None
    action = form.get("Action", [""])[0]
    now = time.time()
    owner = None
    if service == "elasticloadbalancing" and action == "DeleteLoadBalancer":
        arn = form.get("LoadBalancerArn", [""])[0]
        if ":loadbalancer/" in arn:
            owner = "ELB " + arn.split(":loadbalancer/", 1)[1]
    elif service == "eks" and method == "DELETE" and re.fullmatch(r"/clusters/[^/]+", path):
        owner = "Amazon EKS " + urllib.parse.unquote(path.rsplit("/", 1)[1])
    if owner:
        eni = "eni-" + "".join(random.choice("0123456789abcdef") for _ in range(17))
        with LOCK:
            ENIS[owner] = (eni, now + ARGS.linger_seconds)
        return None
    if service != "ec2":
        return None
    with LOCK:
        alive = {d: e for d, (e, until) in ENIS.items() if until > now}
    if action == "DescribeNetworkInterfaces":
        wanted = set()
        for k, v in form.items():
            m = re.fullmatch(r"Filter\.(\d+)\.Name", k)
            if m and v[0] == "description":
                wanted.update(vs[0] for kk, vs in form.items() if kk.startswith(f"Filter.{m.group(1)}.Value."))
        found = [(d, e) for d, e in alive.items() if d in wanted]
        if not found:
            return None
        with LOCK:
            LINGER["listed"] += 1
        items = "".join(f"<item><networkInterfaceId>{e}</networkInterfaceId><description>{d}</description>"
                        f"<status>in-use</status><interfaceType>interface</interfaceType></item>" for d, e in found)
        body = (f'<DescribeNetworkInterfacesResponse xmlns="{EC2_NS}"><requestId>real-aws-mode</requestId>'
                f"<networkInterfaceSet>{items}</networkInterfaceSet></DescribeNetworkInterfacesResponse>")
        return 200, {"Content-Type": "text/xml"}, body
    if action not in LINGERING_DELETES or not alive:
        return None
    field, message = LINGERING_DELETES[action]
    with LOCK:
        LINGER["injected"] += 1
    body = (f"<Response><Errors><Error><Code>DependencyViolation</Code><Message>{message.format(form.get(field, [''])[0])}</Message>"
            "</Error></Errors><RequestID>real-aws-mode</RequestID></Response>")
    return 400, {"Content-Type": "text/xml"}, body


CONNECTIONS = {}  # endpoint service id -> {endpoint id: state}, made by POST /__connect
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def endpoint_connections(action, form):
    """The endpoint-service connection calls moto lacks (EC2 API Reference:
    DescribeVpcEndpointConnections, RejectVpcEndpointConnections), and
    DeleteVpcEndpointServiceConfigurations refusing a service with connections that are
    not rejected: 200 with an Unsuccessful item ExistingVpcEndpointConnections, as EC2
    answers."""
    if action == "DescribeVpcEndpointConnections":
        wanted = [v[0] for k, v in form.items() if re.fullmatch(r"Filter\.\d+\.Value\.\d+", k)]
        with LOCK:
            items = "".join(
                f"<item><serviceId>{svc}</serviceId><vpcEndpointId>{e}</vpcEndpointId><vpcEndpointOwner>210987654321</vpcEndpointOwner>"
                f"<vpcEndpointState>{state}</vpcEndpointState><creationTimestamp>2026-01-01T00:00:00.000Z</creationTimestamp></item>"
                for svc, conns in CONNECTIONS.items() if not wanted or svc in wanted for e, state in conns.items())
        return 200, {"Content-Type": "text/xml"}, (
            f'<DescribeVpcEndpointConnectionsResponse xmlns="{EC2_NS}"><requestId>real-aws-mode</requestId>'
            f"<vpcEndpointConnectionSet>{items}</vpcEndpointConnectionSet></DescribeVpcEndpointConnectionsResponse>")
    if action == "RejectVpcEndpointConnections":
        svc = form.get("ServiceId", [""])[0]
        failed = ""
        with LOCK:
            conns = CONNECTIONS.get(svc, {})
            for k, v in form.items():
                if k.startswith("VpcEndpointId."):
                    if v[0] in conns:
                        conns[v[0]] = "rejected"
                    else:
                        failed += (f"<item><error><code>InvalidVpcEndpoint.NotFound</code><message>The Vpc Endpoint Id '{v[0]}' does not exist</message>"
                                   f"</error><resourceId>{v[0]}</resourceId></item>")
        return 200, {"Content-Type": "text/xml"}, (
            f'<RejectVpcEndpointConnectionsResponse xmlns="{EC2_NS}"><requestId>real-aws-mode</requestId>'
            f"<unsuccessful>{failed}</unsuccessful></RejectVpcEndpointConnectionsResponse>")
    if action == "DeleteVpcEndpointServiceConfigurations":
        ids = [v[0] for k, v in form.items() if k.startswith("ServiceId.")]
        with LOCK:
            busy = [i for i in ids if any(st not in ("rejected", "deleted") for st in CONNECTIONS.get(i, {}).values())]
        if busy:
            items = "".join(f"<item><error><code>ExistingVpcEndpointConnections</code><message>Service {i} has existing active VPC Endpoint connections!</message>"
                            f"</error><resourceId>{i}</resourceId></item>" for i in busy)
            return 200, {"Content-Type": "text/xml"}, (
                f'<DeleteVpcEndpointServiceConfigurationsResponse xmlns="{EC2_NS}"><requestId>real-aws-mode</requestId>'
                f"<unsuccessful>{items}</unsuccessful></DeleteVpcEndpointServiceConfigurationsResponse>")
    return None


def nlb_in_use(form, region):
    """ELBv2 DeleteLoadBalancer of an NLB that a VPC endpoint service still lists: AWS
    refuses it (400 ResourceInUse, "Load balancer '<arn>' cannot be deleted because it is
    currently associated with another service"; the AWS Load Balancer Controller logs it
    when an endpoint service fronts its NLB); moto deletes it and leaves the endpoint
    service pointing at nothing."""
    if form.get("Action", [""])[0] != "DeleteLoadBalancer":
        return None
    arn = form.get("LoadBalancerArn", [""])[0]
    up = urllib.parse.urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
    auth = f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/ec2/aws4_request"
    conn.request("POST", "/", body="Action=DescribeVpcEndpointServiceConfigurations&Version=2016-11-15",
                 headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    data = conn.getresponse().read().decode(errors="replace")
    conn.close()
    if arn and f"<item>{arn}</item>" in data:
        return 400, {"Content-Type": "text/xml"}, (
            '<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type>'
            f"<Code>ResourceInUse</Code><Message>Load balancer '{arn}' cannot be deleted because it is currently associated with another service</Message>"
            "</Error><RequestId>faults-front</RequestId></ErrorResponse>").encode()
    return None


def moto_query(service, region, params):
    """A query-protocol call to moto (EC2, ELBv2), signed for `region`; the answer's text."""
    up = urllib.parse.urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
    auth = f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request"
    conn.request("POST", "/", body=urllib.parse.urlencode(params),
                 headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    data = conn.getresponse().read().decode(errors="replace")
    conn.close()
    return data


def reaches(service_id, region):
    """GET /__reaches/<endpoint service id>: which NLB a consumer's interface endpoint to
    that service reaches in each zone. An interface endpoint has one network interface per
    zone, and each sends to one of the service's NLBs in its zone ("Share your services
    through AWS PrivateLink", PrivateLink Guide: the service provider's load balancers, one
    per zone used; a second NLB in the same zone is an alternative, not an addition), so a
    service fronting two NLBs in the same zones gives the consumer only one of them. The
    first NLB the service lists, in the order EC2 lists them, wins each zone."""
    services = moto_query("ec2", region, {"Action": "DescribeVpcEndpointServiceConfigurations", "Version": "2016-11-15",
                                          "ServiceId.1": service_id})
    arns = re.findall(r"<item>(arn:aws:elasticloadbalancing:[^<]+)</item>", services)
    out = {}
    for arn in arns:
        lb = moto_query("elasticloadbalancing", region, {"Action": "DescribeLoadBalancers", "Version": "2015-12-01",
                                                         "LoadBalancerArns.member.1": arn})
        for zone in re.findall(r"<ZoneName>([^<]+)</ZoneName>", lb):
            out.setdefault(zone, arn)
    return out


def page_eks_list(method, path):
    """EKS list calls with maxResults set to --page-size (AWS pages them; see the docs)."""
    split = urllib.parse.urlsplit(path)
    if method != "GET" or not re.fullmatch(r"/clusters(/[^/]+/node-groups)?", split.path):
        return path
    query = [(k, v) for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True) if k != "maxResults"]
    query.append(("maxResults", str(ARGS.page_size)))
    return split.path + "?" + urllib.parse.urlencode(query)


def service_of(headers):
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else "unknown"


def fault(service):
    """(status, headers, body) of a throttling or server error for `service`."""
    throttle = RNG.random() < 0.5
    if service == "ec2":
        code, status = ("RequestLimitExceeded", 503) if throttle else ("InternalError", 500)
        body = f"<Response><Errors><Error><Code>{code}</Code><Message>injected by faults.py</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        return status, {"Content-Type": "text/xml"}, body
    if service == "s3":
        code, status = ("SlowDown", 503) if throttle else ("InternalError", 500)
        body = f"<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>injected by faults.py</Message><RequestId>fault</RequestId></Error>"
        return status, {"Content-Type": "application/xml"}, body
    if service == "eks":
        code, status = ("TooManyRequestsException", 429) if throttle else ("ServerException", 500)
        return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps({"message": "injected by faults.py"})
    if service == "servicequotas":
        code, status = ("TooManyRequestsException", 400) if throttle else ("ServiceException", 500)
        return status, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps({"__type": code, "message": "injected by faults.py"})
    # Query protocols: IAM, STS, ELBv2.
    code, status = ("Throttling", 400) if throttle else ("InternalFailure", 500)
    body = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected by faults.py</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
    return status, {"Content-Type": "text/xml"}, body


ELB_NAME = re.compile(r"(?!.*--)(?!^-)(?!.*-$)^[A-Za-z0-9-]{1,32}$")
IAM_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


def refused_name(service, form):
    """The ValidationError AWS answers a create call whose name it refuses, or None."""
    action = form.get("Action", [""])[0]
    if service == "elasticloadbalancing" and action in ("CreateLoadBalancer", "CreateTargetGroup"):
        name = form.get("Name", [""])[0]
        what = "LoadBalancer" if action == "CreateLoadBalancer" else "Target group"
        if len(name) > 32:
            message = f"{what} name '{name}' cannot be longer than '32' characters"
        elif not ELB_NAME.match(name):
            message = (f"1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: "
                       "Member must satisfy regular expression pattern: (?!.*--)(?!^-)(?!.*-$)^[A-Za-z0-9-]+$")
        elif action == "CreateLoadBalancer" and name.startswith("internal-"):
            message = f"Load balancer name '{name}' cannot begin with 'internal-'"
        else:
            return None
        ns = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
    elif service == "iam" and action == "CreateRole":
        name = form.get("RoleName", [""])[0]
        if IAM_ROLE_NAME.match(name):
            return None
        constraint = ("Member must have length less than or equal to 64" if len(name) > 64
                      else "Member must satisfy regular expression pattern: [\\w+=,.@-]+")
        message = f"1 validation error detected: Value '{name}' at 'roleName' failed to satisfy constraint: {constraint}"
        ns = "https://iam.amazonaws.com/doc/2010-05-08/"
    else:
        return None
    body = (f'<ErrorResponse xmlns="{ns}"><Error><Type>Sender</Type><Code>ValidationError</Code>'
            f"<Message>{message}</Message></Error><RequestId>refused-by-faults-py</RequestId></ErrorResponse>")
    return 400, {"Content-Type": "text/xml"}, body


def iam_query(action, **params):
    """An IAM query call to moto (which checks no signature): the response body."""
    up = urllib.parse.urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
    body = urllib.parse.urlencode(dict(Action=action, Version="2010-05-08", **params))
    conn.request("POST", "/", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request"})
    data = conn.getresponse().read().decode()
    conn.close()
    return data


def principal_statements(arn):
    """The statements of the inline policies of the user or role `arn` names, from moto."""
    m = re.match(r"arn:[^:]+:iam::\d+:(user|role)/(?:.*/)?([^/]+)$", arn)
    if not m:
        return []
    kind, name = m.group(1), m.group(2)
    cap = kind.capitalize()
    listed = iam_query(f"List{cap}Policies", **{f"{cap}Name": name})
    statements = []
    for policy in re.findall(r"<member>([^<]+)</member>", listed):
        got = iam_query(f"Get{cap}Policy", **{f"{cap}Name": name, "PolicyName": policy})
        doc = re.search(r"<PolicyDocument>([^<]*)</PolicyDocument>", got)
        if doc:
            text = urllib.parse.unquote(doc.group(1).replace("&quot;", '"').replace("&amp;", "&"))
            st = json.loads(text).get("Statement", [])
            statements += st if isinstance(st, list) else [st]
    return statements


def listed(value):
    return value if isinstance(value, list) else [value]


def matches_action(st, action):
    glob = lambda pattern: re.fullmatch(re.escape(pattern).replace("\\*", ".*").replace("\\?", "."), action, re.IGNORECASE)
    if "NotAction" in st:
        return not any(glob(p) for p in listed(st["NotAction"]))
    return any(glob(p) for p in listed(st.get("Action", [])))


def conditions_hold(condition, context):
    """IAM's condition operators the tests use, as the policy evaluation logic documents
    them: a key missing from the request context fails every operator but ...IfExists."""
    for operator, keys in (condition or {}).items():
        op = operator.split(":")[-1]
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        for key, wanted in keys.items():
            have = context.get(key.lower())
            if have is None:
                if if_exists:
                    continue
                return False
            wanted = listed(wanted)
            if op == "StringEquals":
                ok = any(h == w for h in have for w in wanted)
            elif op == "StringEqualsIgnoreCase":
                ok = any(h.lower() == w.lower() for h in have for w in wanted)
            elif op == "StringLike":
                ok = any(re.fullmatch(re.escape(w).replace("\\*", ".*").replace("\\?", "."), h) for h in have for w in wanted)
            elif op == "StringNotEquals":
                ok = all(h != w for h in have for w in wanted)
            else:
                return False  # an operator this evaluator does not know never matches
            if not ok:
                return False
    return True


def evaluate(statements, action, context):
    """IAM's decision for one action: an explicit deny wins, then any allow."""
    decision = "implicitDeny"
    for st in statements:
        if matches_action(st, action) and conditions_hold(st.get("Condition"), context):
            if st.get("Effect") == "Deny":
                return "explicitDeny"
            decision = "allowed"
    return decision


def simulate(form):
    named = [(int(k.rsplit(".", 1)[1]), v[0]) for k, v in form.items() if k.startswith("ActionNames.member.")]
    actions = [a for _, a in sorted(named)]
    deny = set(filter(None, ARGS.deny.split(",")))
    context = {}
    for k, v in form.items():
        m = re.fullmatch(r"ContextEntries\.member\.(\d+)\.ContextKeyName", k)
        if m:
            n = m.group(1)
            values = [vv[0] for kk, vv in sorted(form.items()) if kk.startswith(f"ContextEntries.member.{n}.ContextKeyValues.member.")]
            context[v[0].lower()] = values
    with LOCK:
        SIMULATIONS.append({"actions": actions, "context": context})
    statements = principal_statements(form.get("PolicySourceArn", [""])[0]) if ARGS.evaluate_policies else None

    def decide(a):
        if a in deny:
            return "implicitDeny"
        return evaluate(statements, a, context) if statements is not None else "allowed"

    members = "".join(
        f"<member><EvalActionName>{a}</EvalActionName><EvalResourceName>*</EvalResourceName>"
        f"<EvalDecision>{decide(a)}</EvalDecision>"
        "<MatchedStatements/><MissingContextValues/></member>"
        for a in actions
    )
    body = (
        '<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        f"<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{members}</EvaluationResults>"
        "</SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>recorded</RequestId></ResponseMetadata>"
        "</SimulatePrincipalPolicyResponse>"
    )
    return 200, {"Content-Type": "text/xml"}, body


def quota(request):
    if ARGS.quota == "none" or request.get("ServiceCode") != "eks" or request.get("QuotaCode") != "L-6D54EA21":
        return None
    q = {
        "ServiceCode": "eks",
        "ServiceName": "Amazon Elastic Kubernetes Service (Amazon EKS)",
        "QuotaArn": "arn:aws:servicequotas:us-east-1:123456789012:eks/L-6D54EA21",
        "QuotaCode": "L-6D54EA21",
        "QuotaName": "Managed node groups per cluster",
        "Value": float(ARGS.quota),
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }
    return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps({"Quota": q})


def eks_error(status, code, message):
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps({"message": message})


def eks_ok(doc):
    return 200, {"Content-Type": "application/json"}, json.dumps(doc)


def today():
    return ARGS.today or time.strftime("%Y-%m-%d", time.gmtime())


def epoch(day):
    return calendar.timegm(time.strptime(day + " 12", "%Y-%m-%d %H"))


def cluster_versions(query):
    """DescribeClusterVersions from EKS_VERSIONS, judged against --today."""
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    wanted = set(q.get("clusterVersions", []))
    include_all = q.get("includeAll", ["false"])[0] == "true"
    now, out = today(), []
    newest = max(EKS_VERSIONS, key=lambda v: int(v.split(".")[1]))
    for v, (release, std, ext) in sorted(EKS_VERSIONS.items(), key=lambda kv: int(kv[0].split(".")[1])):
        if wanted and v not in wanted:
            continue
        # A day is in support up to and including its end date.
        status = "STANDARD_SUPPORT" if now <= std else "EXTENDED_SUPPORT" if now <= ext else "UNSUPPORTED"
        if status == "UNSUPPORTED" and not include_all:
            continue
        out.append({"clusterType": "eks", "clusterVersion": v, "defaultPlatformVersion": "eks.1", "defaultVersion": v == newest,
                    "releaseDate": epoch(release), "endOfStandardSupportDate": epoch(std), "endOfExtendedSupportDate": epoch(ext),
                    "status": status.lower().replace("_", "-"), "versionStatus": status, "kubernetesPatchVersion": v + ".0"})
    return eks_ok({"clusterVersions": out})


def moto_cluster(name):
    """moto's DescribeCluster answer for `name`, or None."""
    status, data = upstream_json("GET", f"/clusters/{name}")
    return json.loads(data).get("cluster") if status == 200 else None


# The Authorization header of the EKS request being answered, per handler thread: moto
# keeps each region's clusters apart and reads the region from the signature, so the
# front's own reads of moto must be signed for the caller's region.
CALLER = threading.local()


def upstream_json(method, path):
    up = urllib.parse.urlsplit(ARGS.upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
    auth = getattr(CALLER, "authorization", None) or "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/eks/aws4_request"
    conn.request(method, path, headers={"Authorization": auth})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def update_object(kind, params):
    return {"update": {"id": f"recorded-{len(EKS_LOG)}", "status": "InProgress", "type": kind, "params": params,
                       "createdAt": time.time(), "errors": []}}


def eks_double(method, path, body):
    """The EKS calls moto lacks or gets wrong, or None to forward."""
    split = urllib.parse.urlsplit(path)
    parts = [p for p in split.path.split("/") if p]
    doc = {}
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
    if parts == ["cluster-versions"] and method == "GET":
        return cluster_versions(split.query)
    if len(parts) < 2 or parts[0] != "clusters":
        return None
    name = parts[1]
    if len(parts) == 2 and method == "DELETE":
        # EKS deletes a cluster's add-ons with it; what this front keeps goes too.
        with LOCK:
            for key in [k for k in ADDONS if k[0] == name]:
                del ADDONS[key]
            for key in [k for k in NG_VERSIONS if k[0] == name]:
                del NG_VERSIONS[key]
            POLICIES.pop(name, None)
            UPDATES.pop(name, None)
        return None
    if len(parts) == 3 and parts[2] == "update-config" and method == "POST" and "upgradePolicy" in doc \
            and set(doc) <= {"upgradePolicy", "clientRequestToken"}:
        if moto_cluster(name) is None:
            return eks_error(404, "ResourceNotFoundException", f"No cluster found for name: {name}.")
        support = doc["upgradePolicy"].get("supportType", "EXTENDED")
        with LOCK:
            POLICIES[name] = support
            EKS_LOG.append({"cluster": name, "upgradePolicy": support})
        return eks_ok(update_object("UpgradePolicyUpdate", [{"type": "UpgradePolicy", "value": support}]))
    if len(parts) == 3 and parts[2] == "updates" and method == "POST":
        version = doc.get("version", "")
        c = moto_cluster(name)
        if c is None:
            return eks_error(404, "ResourceNotFoundException", f"No cluster found for name: {name}.")
        with LOCK:
            running = (UPDATES.get(name) or {}).get("version") or c.get("version", "")
        try:
            step = int(version.split(".")[1]) - int(running.split(".")[1])
        except (IndexError, ValueError):
            step = None
        if step != 1 or version not in EKS_VERSIONS:
            return eks_error(400, "InvalidParameterException", f"Unsupported Kubernetes minor version update from {running} to {version}")
        with LOCK:
            UPDATES[name] = {"version": version, "reads": ARGS.creating}
            EKS_LOG.append({"cluster": name, "version": version})
        return eks_ok(update_object("VersionUpdate", [{"type": "Version", "value": version}]))
    if len(parts) == 5 and parts[2] == "node-groups" and parts[4] == "update-version" and method == "POST":
        group, version = parts[3], doc.get("version", "")
        c = moto_cluster(name)
        with LOCK:
            cluster_version = (UPDATES.get(name) or {}).get("version") or (c or {}).get("version", "")
        if version and version != cluster_version:
            return eks_error(400, "InvalidParameterException",
                             f"Requested Kubernetes version {version} is not supported: the cluster runs {cluster_version}")
        with LOCK:
            NG_VERSIONS[(name, group)] = version or cluster_version
            EKS_LOG.append({"cluster": name, "nodegroup": group, "version": version or cluster_version})
        return eks_ok(update_object("VersionUpdate", [{"type": "Version", "value": version}]))
    if len(parts) >= 3 and parts[2] == "addons":
        return addon_call(method, name, parts[3:], doc, split.query)
    return None


def addon_call(method, cluster, rest, doc, query):
    if moto_cluster(cluster) is None:
        return eks_error(404, "ResourceNotFoundException", f"No cluster found for name: {cluster}.")
    with LOCK:
        if not rest and method == "GET":
            names = sorted(n for (c, n) in ADDONS if c == cluster)
            return eks_ok({"addons": names})
        if not rest and method == "POST":
            addon = doc.get("addonName", "")
            if (cluster, addon) in ADDONS:
                return eks_error(409, "ResourceInUseException", f"Addon already exists: {addon}")
            obj = {"addonName": addon, "clusterName": cluster, "status": "CREATING", "addonVersion": "v1.0.0-eksbuild.1",
                   "health": {"issues": []}, "serviceAccountRoleArn": doc.get("serviceAccountRoleArn"),
                   "addonArn": f"arn:aws:eks:us-east-1:{ACCOUNT}:addon/{cluster}/{addon}/recorded",
                   "createdAt": time.time(), "modifiedAt": time.time(), "tags": doc.get("tags") or {}, "reads": 0}
            ADDONS[(cluster, addon)] = obj
            EKS_LOG.append({"cluster": cluster, "addon": addon, "create": True})
            return eks_ok({"addon": {k: v for k, v in obj.items() if k != "reads"}})
        addon = rest[0]
        obj = ADDONS.get((cluster, addon))
        if obj is None:
            return eks_error(404, "ResourceNotFoundException", f"No addon: {addon} found in cluster: {cluster}")
        if len(rest) == 1 and method == "GET":
            obj["reads"] += 1
            if obj["status"] == "CREATING" and obj["reads"] > ARGS.creating:
                obj["status"] = "ACTIVE"
            if obj["status"] == "DELETING":
                del ADDONS[(cluster, addon)]
            return eks_ok({"addon": {k: v for k, v in obj.items() if k != "reads"}})
        if len(rest) == 1 and method == "DELETE":
            obj["status"] = "DELETING"
            return eks_ok({"addon": {k: v for k, v in obj.items() if k != "reads"}})
        if len(rest) == 2 and rest[1] == "update" and method == "POST":
            if "serviceAccountRoleArn" in doc:
                obj["serviceAccountRoleArn"] = doc["serviceAccountRoleArn"]
            return eks_ok(update_object("AddonUpdate", []))
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers, body):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/__faults":
            with LOCK:
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(INJECTED))
        if self.path == "/__eks":
            with LOCK:
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(dict(UPDATES, log=EKS_LOG)))
        if self.path == "/__calls":
            with LOCK:
                if self.command == "POST":
                    CALLS.clear()
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(CALLS))
        if self.path == "/__delay":
            with LOCK:
                if self.command == "POST":
                    DELAY[0] = max(0.0, float(body.decode() or "0"))
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(DELAY[0]))
        if self.path == "/__linger":
            with LOCK:
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps({"injected": LINGER["injected"], "listed": LINGER["listed"]}))
        if self.path.startswith("/__reaches/"):
            return self.answer(200, {"Content-Type": "application/json"},
                               json.dumps(reaches(self.path.rsplit("/", 1)[1], region_of(self.headers))))
        if self.path == "/__connect":
            # A consumer's interface endpoint connects to the service named in the body.
            endpoint = "vpce-" + "".join(random.choice("0123456789abcdef") for _ in range(17))
            with LOCK:
                CONNECTIONS.setdefault(body.decode().strip(), {})[endpoint] = "available"
            return self.answer(200, {"Content-Type": "application/json"}, json.dumps(endpoint))
        if self.path == "/__simulations":
            with LOCK:
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(SIMULATIONS))
        if self.path == "/__propagation":
            with LOCK:
                return self.answer(200, {"Content-Type": "application/json"}, json.dumps(PROPAGATED))
        if self.path == "/__calls/reset":
            with LOCK:
                CALLS.clear()
            return self.answer(200, {"Content-Type": "application/json"}, "[]")
        with LOCK:
            delay = DELAY[0]
        if delay:
            # Each request has a thread of its own: only this caller waits.
            time.sleep(delay)
        service = service_of(self.headers)
        record(service, self.command, self.path, self.headers, body)
        with LOCK:
            inject = RNG.random() < ARGS.fault_rate
            if inject:
                INJECTED[service] = INJECTED.get(service, 0) + 1
                status, headers, payload = fault(service)
        if inject:
            return self.answer(status, headers, payload)
        if service in ("iam", "elasticloadbalancing") and b"Action=Create" in body:
            refused = refused_name(service, urllib.parse.parse_qs(body.decode(), keep_blank_values=True))
            if refused:
                return self.answer(*refused)
        if ARGS.real_aws and service == "s3":
            real = real_s3(self.command, self.path, self.headers, body)
            if real:
                return self.answer(*real)
            if self.command == "DELETE":
                with LOCK:
                    BUCKET_REGION.pop(urllib.parse.urlsplit(self.path).path.lstrip("/").split("/", 1)[0], None)
        if ARGS.real_aws and service == "eks":
            self.path = page_eks_list(self.command, self.path)
            gone = re.fullmatch(r"/clusters/[^/]+/node-groups/([^/?]+)", urllib.parse.urlsplit(self.path).path)
            if gone and self.command == "DELETE":
                with LOCK:
                    if FAILING.get(gone.group(1)) == "failing":
                        FAILING[gone.group(1)] = "replaced"
        form, json_body = {}, {}
        if ARGS.real_aws and service in ("ec2", "iam"):
            form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        if ARGS.real_aws and service == "eks" and body:
            try:
                json_body = json.loads(body)
            except ValueError:
                json_body = {}
        if service in ("ec2", "elasticloadbalancing") and not form:
            form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        if ARGS.real_aws:
            refused = (lingering(service, self.command, urllib.parse.urlsplit(self.path).path, form)
                       or lingering_interfaces(service, self.command, urllib.parse.urlsplit(self.path).path, form))
            if refused:
                return self.answer(*refused)
        if service == "ec2":
            answered = endpoint_connections(form.get("Action", [""])[0], form)
            if answered:
                return self.answer(*answered)
        if service == "elasticloadbalancing":
            refused = nlb_in_use(form, region_of(self.headers))
            if refused:
                return self.answer(*refused)
        if ARGS.real_aws:
            late = not_visible_yet(service, self.command, urllib.parse.urlsplit(self.path).path, form, json_body)
            if late:
                return self.answer(*late)
            self.learn = (service, form, json_body)
        if service == "iam" and b"Action=SimulatePrincipalPolicy" in body:
            return self.answer(*simulate(urllib.parse.parse_qs(body.decode())))
        if self.headers.get("X-Amz-Target", "").endswith(".GetServiceQuota"):
            recorded = quota(json.loads(body or b"{}"))
            if recorded:
                return self.answer(*recorded)
        if service == "eks":
            CALLER.authorization = self.headers.get("Authorization")
            answered = eks_access(self.command, self.path, body)
            if answered:
                return self.answer(*answered)
            answer = eks_double(self.command, self.path, body)
            if answer:
                return self.answer(*answer)
            if self.command == "POST" and re.fullmatch(r"/clusters/?", urllib.parse.urlsplit(self.path).path) and body:
                # moto drops the upgrade policy; EKS's default is EXTENDED.
                doc = json.loads(body)
                with LOCK:
                    POLICIES.setdefault(doc.get("name", ""), (doc.get("upgradePolicy") or {}).get("supportType", "EXTENDED"))
        self.forward(body, service)

    def slow_phases(self, data):
        """Rewrites moto's describe answers to show the phases it skips."""
        m = re.fullmatch(r"/clusters/([^/?]+)(/node-groups/([^/?]+))?", self.path)
        if self.command != "GET" or not m:
            return data
        doc = json.loads(data)
        key = "nodegroup" if m.group(3) else "cluster"
        obj = doc.get(key)
        if not obj:
            return data
        with LOCK:
            if key == "cluster" and m.group(1) in ACCESS:
                state = ACCESS[m.group(1)]
                obj["accessConfig"] = {"authenticationMode": state["mode"], "bootstrapClusterCreatorAdminPermissions": state["bootstrap"]}
            name = (key, m.group(1), m.group(3))
            READS[name] = READS.get(name, 0) + 1
            if key == "nodegroup" and FAILING.get(m.group(3)) == "failing":
                # --fail-node-group: EKS's answer for a group whose instances never joined
                # (EKS API Reference, Nodegroup status CREATE_FAILED; Issue code
                # NodeCreationFailure). It stays so until the group is deleted.
                obj["status"] = "CREATE_FAILED"
                obj["health"] = {"issues": [{"code": "NodeCreationFailure", "message": "Instances failed to join the kubernetes cluster",
                                             "resourceIds": ["i-0123456789abcdef0"]}]}
                return json.dumps(doc).encode()
            if READS[name] <= ARGS.creating and obj.get("status") == "ACTIVE":
                obj["status"] = "CREATING"
            update = UPDATES.get(m.group(1)) if key == "cluster" else None
            if key == "cluster":
                obj["upgradePolicy"] = {"supportType": POLICIES.get(m.group(1), "EXTENDED")}
            elif (m.group(1), m.group(3)) in NG_VERSIONS:
                obj["version"] = NG_VERSIONS[(m.group(1), m.group(3))]
            if update:
                obj["version"] = update["version"]
                if update["reads"] > 0:
                    update["reads"] -= 1
                    obj["status"] = "UPDATING"
        return json.dumps(doc).encode()

    def forward(self, body, service):
        up = urllib.parse.urlsplit(ARGS.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding", "content-length")}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200 and getattr(self, "learn", None):
            learn_created(self.learn[0], self.learn[1], self.learn[2], data)
        self.learn = None
        if service == "eks" and resp.status == 200:
            data = self.slow_phases(data)
        if service == "s3" and resp.status == 200 and self.command == "GET" and re.search(r"[?&]versioning(=|&|$)", self.path):
            data = data.replace(b"GetBucketVersioningResponse", b"VersioningConfiguration")
        out = {k: v for k, v in resp.getheaders() if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date")}
        conn.close()
        self.answer(resp.status, out, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


def watch_owner(pid, server):
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            server.shutdown()
            return
        time.sleep(1)


def main():
    global ARGS, RNG
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--owner", type=int, required=True)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--deny", default="")
    p.add_argument("--quota", default="50")
    p.add_argument("--creating", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--real-aws", action="store_true")
    p.add_argument("--page-size", type=int, default=1)
    p.add_argument("--propagation", type=int, default=2)
    p.add_argument("--evaluate-policies", action="store_true")
    p.add_argument("--linger", type=int, default=0)
    p.add_argument("--linger-seconds", type=float, default=0)
    p.add_argument("--fail-node-group", default="")
    p.add_argument("--today", default="")
    ARGS = p.parse_args()
    DELAY[0] = ARGS.delay
    if not ARGS.real_aws:
        ARGS.propagation = 0
    RNG = random.Random(ARGS.seed)
    for name in filter(None, ARGS.fail_node_group.split(",")):
        FAILING[name] = "failing"
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    # A client killed mid-request (the crash tests) breaks its connection; not an error here.
    server.handle_error = lambda request, address: None
    server.daemon_threads = True
    threading.Thread(target=watch_owner, args=(ARGS.owner, server), daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
