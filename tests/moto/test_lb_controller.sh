#!/usr/bin/env bash
# Shows tests/moto/lb_controller.py doing to moto what the AWS Load Balancer Controller does
# to AWS: moto (behind faults.py's real-AWS mode) and the Kubernetes double on loopback
# ports, an EKS cluster in a VPC with private subnets tagged kubernetes.io/role/internal-elb
# in two zones, Services in byoc-system, then checks, in order: nothing happens before the
# controller's Deployment exists; NLBs, tags, subnets, listeners, target groups (proxy
# protocol), frontend and backend security groups, status and finalizers; no NLB (and no
# finalizer) without a usable subnet; a restarted stand-in changes nothing; a deleted
# Service stays terminating until its NLB, target group and security group are gone
# (through DependencyViolation); an internet-facing NLB once a public subnet exists;
# port and scheme changes; orphans kept, or collected with --gc-orphans; the backend
# security group goes with the last Service. Exits non-zero on the first failed check.
# Usage: bash tests/moto/test_lb_controller.sh   (KUBE_DOUBLE=path to the double's
# binary, default target/debug/kube-double; VERBOSE=1 prints the stand-in's log)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${BYOC_MOTO_VENV:-$HOME/.cache/byoc/moto-venv}/bin/python"
double="${KUBE_DOUBLE:-$root/target/debug/kube-double}"
# The e2e suite serves the double itself and passes its kubeconfig (SERVED_KUBECONFIG).
if [ -z "${SERVED_KUBECONFIG:-}" ]; then
  [ -x "$double" ] || { echo "no kube-double at $double: cargo build -p kube-double, or set KUBE_DOUBLE" >&2; exit 2; }
fi
start=$(date +%s.%N)
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
moto_port=$(free_port)
bash "$here/start.sh" "$moto_port" $$ >/dev/null
if [ -n "${SERVED_KUBECONFIG:-}" ]; then
  cp "$SERVED_KUBECONFIG" "$work/kubeconfig"
else
  "$double" --listen 127.0.0.1:0 --lifetime 120 >"$work/kubeconfig" &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'server:' "$work/kubeconfig" 2>/dev/null && break; sleep 0.05; done
fi
grep -q 'server:' "$work/kubeconfig" || { echo "FAIL: the kube double printed no kubeconfig" >&2; exit 1; }

# The stand-in talks to AWS through the moto front in its real-AWS mode: throttling on 5%
# of calls, new EC2 ids not yet visible for 2 calls, and security groups refused with
# DependencyViolation twice after a load balancer is deleted, as AWS answers while its
# network interfaces linger. The checks below read moto directly.
front_port=$(free_port)
coproc FRONT { "$py" "$here/faults.py" --port "$front_port" --upstream "http://127.0.0.1:$moto_port" --owner $$ \
  --real-aws --fault-rate 0 --seed 7 --linger 2 2>&1; }
pids+=($FRONT_PID)
read -r -t 20 ready <&"${FRONT[0]}" && [ "$ready" = ready ] || { echo "FAIL: faults.py did not start" >&2; exit 1; }
export FRONT_URL="http://127.0.0.1:$front_port"
export AWS_URL="http://127.0.0.1:$moto_port" KUBECONFIG_FILE="$work/kubeconfig" LOG="$work/controller.log"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing

# Shared helpers for the checks below (python, boto3 and urllib).
cat >"$work/lib.py" <<'EOF'
import json, os, re, sys, time, urllib.request, urllib.error
import boto3
kw = dict(endpoint_url=os.environ["AWS_URL"], region_name="us-east-1")
ec2, elb, eks, iam = (boto3.client(s, **kw) for s in ("ec2", "elbv2", "eks", "iam"))
text = open(os.environ["KUBECONFIG_FILE"]).read()
SERVER = re.search(r"server:\s*(\S+)", text).group(1)
def kube(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(SERVER + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer double"); req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
def svc(name):
    return kube("GET", f"/api/v1/namespaces/byoc-system/services/{name}")
def tags(arn):
    return {t["Key"]: t["Value"] for t in elb.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"]}
def lbs():
    return {tags(l["LoadBalancerArn"]).get("service.k8s.aws/stack"): l for l in elb.describe_load_balancers()["LoadBalancers"]}
def inventory():
    """Everything ELB and EC2 hold that a controller could have made, to compare rounds."""
    out = []
    for l in elb.describe_load_balancers()["LoadBalancers"]:
        out.append(l["LoadBalancerArn"])
        out += [x["ListenerArn"] for x in elb.describe_listeners(LoadBalancerArn=l["LoadBalancerArn"])["Listeners"]]
    out += [t["TargetGroupArn"] for t in elb.describe_target_groups()["TargetGroups"]]
    out += [(g["GroupId"], json.dumps(g["IpPermissions"], sort_keys=True)) for g in ec2.describe_security_groups()["SecurityGroups"]]
    return sorted(map(str, out))
def state():
    """The AWS inventory and the Services' resourceVersions: what a round could change."""
    return inventory(), [(s["metadata"]["name"], s["metadata"]["resourceVersion"])
                         for s in kube("GET", "/api/v1/namespaces/byoc-system/services")["items"]]
def host(name):
    return ((svc(name).get("status") or {}).get("loadBalancer") or {}).get("ingress")
def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr); sys.exit(1)
def wait(what, fn, tries=100):
    for _ in range(tries):  # bounded: 100 x 0.1 s
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    check(False, f"timed out waiting for {what}")
EOF
export PYTHONPATH="$work"

# The account: a VPC with two private subnets tagged for internal NLBs, one more subnet
# tagged for internal NLBs but for another cluster, alone in its zone (must be skipped), no public subnet
# and no subnet tagged kubernetes.io/role/elb; an EKS cluster on the private subnets.
"$py" - <<'EOF'
from lib import *
vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
def subnet(cidr, az, t):
    return ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az, TagSpecifications=[
        {"ResourceType": "subnet", "Tags": [{"Key": k, "Value": v} for k, v in t.items()]}])["Subnet"]["SubnetId"]
a = subnet("10.40.1.0/24", "us-east-1a", {"kubernetes.io/role/internal-elb": "1"})
b = subnet("10.40.2.0/24", "us-east-1b", {"kubernetes.io/role/internal-elb": ""})
subnet("10.40.3.0/24", "us-east-1c", {"kubernetes.io/role/internal-elb": "1", "kubernetes.io/cluster/other": "owned"})
role = iam.create_role(RoleName="eks-cluster", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
eks.create_cluster(name="byoc-test", roleArn=role, resourcesVpcConfig={"subnetIds": [a, b]})
open(os.environ["KUBECONFIG_FILE"] + ".subnets", "w").write(f"{a} {b} {vpc}")
kube("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "byoc-system"}})
A = "service.beta.kubernetes.io/"
def service(name, ann, ports, cls="service.k8s.aws/nlb", **spec):
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "byoc-system", "annotations": ann},
            "spec": dict(type="LoadBalancer", selector={"app": "byoc"}, ports=ports, **spec)}
    if cls:
        body["spec"]["loadBalancerClass"] = cls
    kube("POST", "/api/v1/namespaces/byoc-system/services", body)
# rwproxy's target type is the Deployment's --default-target-type=ip.
service("rwproxy", {A + "aws-load-balancer-proxy-protocol": "*"},
        [{"name": "sql", "port": 4566, "targetPort": 4566, "protocol": "TCP"}], loadBalancerSourceRanges=["10.0.0.0/8"])
service("byoc-agent", {A + "aws-load-balancer-scheme": "internal", A + "aws-load-balancer-nlb-target-type": "instance"},
        [{"name": "api", "port": 8443, "targetPort": 8443, "nodePort": 30443, "protocol": "TCP"}])
service("rwproxy-public", {A + "aws-load-balancer-scheme": "internet-facing", A + "aws-load-balancer-nlb-target-type": "ip"},
        [{"name": "sql", "port": 4566, "protocol": "TCP"}])
service("other-class", {}, [{"name": "x", "port": 80, "protocol": "TCP"}], cls=None)
EOF

# The first stand-in takes its flags from the controller's Deployment, as the controller
# does, and does nothing until that Deployment exists.
"$py" "$here/lb_controller.py" --kubeconfig "$work/kubeconfig" --aws "$FRONT_URL" \
  --from-deployment kube-system/aws-load-balancer-controller --owner $$ --lifetime 60 --interval 0.1 2>"$LOG" &
ctl=$!
pids+=($ctl)

"$py" - <<'EOF' || { cat "$LOG" >&2; exit 1; }
from lib import *
a, b, vpc = open(os.environ["KUBECONFIG_FILE"] + ".subnets").read().split()
wait("the stand-in to see no controller", lambda: "Deployment kube-system/aws-load-balancer-controller not found" in open(os.environ["LOG"]).read())
time.sleep(0.3)
check(not lbs() and not svc("rwproxy")["metadata"].get("finalizers"), "the stand-in acted with no controller Deployment")
if kube("GET", "/api/v1/namespaces/kube-system") is None:
    kube("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
labels = {"app.kubernetes.io/name": "aws-load-balancer-controller"}
kube("POST", "/apis/apps/v1/namespaces/kube-system/deployments", {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "aws-load-balancer-controller", "namespace": "kube-system"},
    "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
        "name": "controller", "image": "public.ecr.aws/eks/aws-load-balancer-controller:v2.14.1",
        "args": ["--cluster-name=byoc-test", f"--aws-vpc-id={vpc}", "--aws-region=us-east-1", "--default-target-type=ip"]}]}}}})
for name in ("rwproxy", "byoc-agent"):
    wait(f"{name}'s status hostname", lambda: host(name))
found = lbs()
for name, port, tg_port, ttype, pp, cidr in (("rwproxy", 4566, 4566, "ip", "true", "10.0.0.0/8"),
                                             ("byoc-agent", 8443, 30443, "instance", "false", "0.0.0.0/0")):
    stack = f"byoc-system/{name}"
    lb = found.get(stack)
    check(lb, f"no NLB tagged service.k8s.aws/stack={stack}")
    s = svc(name)
    check(host(name) == [{"hostname": lb["DNSName"]}], f"{name} status {host(name)} is not the NLB's {lb['DNSName']}")
    check("service.k8s.aws/resources" in s["metadata"].get("finalizers", []), f"{name} has no finalizer")
    check(lb["Type"] == "network" and lb["Scheme"] == "internal", f"{name}: {lb['Type']} {lb['Scheme']}")
    check(re.fullmatch(r"k8s-byocsyst-" + name.replace("-", "")[:8] + r"-[0-9a-f]{10}", lb["LoadBalancerName"]) and len(lb["LoadBalancerName"]) <= 32,
          f"NLB name {lb['LoadBalancerName']}")
    check(tags(lb["LoadBalancerArn"]) == {"elbv2.k8s.aws/cluster": "byoc-test", "service.k8s.aws/stack": stack,
                                         "service.k8s.aws/resource": "LoadBalancer"}, f"NLB tags {tags(lb['LoadBalancerArn'])}")
    check(sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == sorted([a, b]), f"{name} subnets {lb['AvailabilityZones']} (want {a} {b}, not the other cluster's)")
    ls = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    check([(l["Port"], l["Protocol"]) for l in ls] == [(port, "TCP")], f"{name} listeners {ls}")
    tg = elb.describe_target_groups(TargetGroupArns=[ls[0]["DefaultActions"][0]["TargetGroupArn"]])["TargetGroups"][0]
    check((tg["Protocol"], tg["Port"], tg["TargetType"]) == ("TCP", tg_port, ttype), f"{name} target group {tg}")
    check(tags(tg["TargetGroupArn"]).get("service.k8s.aws/resource") == f"{stack}:{port}", f"TG tags {tags(tg['TargetGroupArn'])}")
    attrs = {x["Key"]: x["Value"] for x in elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]}
    check(attrs.get("proxy_protocol_v2.enabled", "false") == pp, f"{name} proxy_protocol_v2.enabled={attrs.get('proxy_protocol_v2.enabled')}")
    sgs = ec2.describe_security_groups(GroupIds=lb["SecurityGroups"])["SecurityGroups"]
    backend = [g for g in sgs if g["GroupName"].startswith("k8s-traffic-byoctest-")]
    check(len(sgs) == 2 and len(backend) == 1, f"{name} NLB security groups {[g['GroupName'] for g in sgs]}: want a frontend and the backend")
    check({t["Key"]: t["Value"] for t in backend[0]["Tags"]} == {"elbv2.k8s.aws/cluster": "byoc-test", "elbv2.k8s.aws/resource": "backend-sg"},
          f"backend SG tags {backend[0]['Tags']}")
    sg = [g for g in sgs if g not in backend][0]
    st = {t["Key"]: t["Value"] for t in sg["Tags"]}
    check(st.get("service.k8s.aws/stack") == stack and st.get("elbv2.k8s.aws/cluster") == "byoc-test", f"SG tags {st}")
    rules = [(p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"]) for p in sg["IpPermissions"] for r in p["IpRanges"]]
    check(rules == [("tcp", port, port, cidr)], f"{name} SG ingress {rules}")
for name in ("rwproxy-public", "other-class"):
    s = svc(name)
    check(f"byoc-system/{name}" not in found, f"{name} got an NLB")
    check(not s["metadata"].get("finalizers"), f"{name} got a finalizer {s['metadata'].get('finalizers')}")
    check(not (s.get("status") or {}).get("loadBalancer"), f"{name} got a status {s.get('status')}")
check("byoc-system/rwproxy-public: unable to resolve at least one subnet" in open(os.environ["LOG"]).read(),
      "no 'unable to resolve at least one subnet' for the internet-facing Service")
print("ok: NLBs, listeners, target groups, security groups, status and finalizers")

json.dump(state(), open(os.environ["LOG"] + ".before", "w"))
EOF

# A second round changes nothing: a restarted stand-in (as after a controller restart)
# reconciles every Service again and finds the same AWS inventory, writing nothing.
kill "$ctl" 2>/dev/null || true
wait "$ctl" 2>/dev/null || true
echo "--- restarted" >>"$LOG"
"$py" "$here/lb_controller.py" --kubeconfig "$work/kubeconfig" --aws "$FRONT_URL" \
  --from-deployment kube-system/aws-load-balancer-controller --owner $$ --lifetime 60 --interval 0.1 2>>"$LOG" &
ctl=$!
pids+=($ctl)
"$py" - <<'EOF' || { cat "$LOG" >&2; exit 1; }
from lib import *
A = "service.beta.kubernetes.io/"
a, b, vpc = open(os.environ["KUBECONFIG_FILE"] + ".subnets").read().split()
restarted = lambda: open(os.environ["LOG"]).read().split("--- restarted\n", 1)[1]
# The failing Service comes last in the list, so its error line means one full poll.
wait("a full poll of the restarted stand-in", lambda: "byoc-system/rwproxy-public: unable to resolve" in restarted())
time.sleep(0.5)
check(json.load(open(os.environ["LOG"] + ".before")) == json.loads(json.dumps(state())), "the restarted stand-in changed something")
quiet = r"lb-controller: (watching .*|configured: .*|byoc-system/rwproxy-public: unable to resolve at least one subnet.*)"
acts = [l for l in restarted().splitlines() if not re.fullmatch(quiet, l)]
check(not acts, f"the restarted stand-in acted or failed: {acts}")
print("ok: a second round (a restarted stand-in) changes nothing")

# Deleting a Service: it stays, terminating, until its NLB, target groups and security
# group are gone; then it goes. The other Service keeps its NLB.
lb = lbs()["byoc-system/rwproxy"]
sg_id = lb["SecurityGroups"][0]
held = kube("DELETE", "/api/v1/namespaces/byoc-system/services/rwproxy")
check(held and held.get("metadata", {}).get("deletionTimestamp"), f"DELETE did not leave rwproxy terminating: {held}")
wait("rwproxy to go", lambda: svc("rwproxy") is None)
check("byoc-system/rwproxy" not in lbs(), "rwproxy's NLB outlived its Service")
check(not [t for t in elb.describe_target_groups()["TargetGroups"] if tags(t["TargetGroupArn"]).get("service.k8s.aws/stack") == "byoc-system/rwproxy"],
      "rwproxy's target group outlived its Service")
check(sg_id not in [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]], "rwproxy's security group outlived its Service")
log = open(os.environ["LOG"]).read()
check(log.index(f"deleted NLB {lb['LoadBalancerName']}") < log.index("removed finalizer service.k8s.aws/resources from byoc-system/rwproxy"),
      "the finalizer went before the NLB")
check("byoc-system/byoc-agent" in lbs(), "byoc-agent's NLB went with rwproxy")
backend = [g for g in lb["SecurityGroups"] if g != sg_id]
check(backend and backend[0] in [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]],
      "the shared backend security group went while byoc-agent still uses it")
lingered = json.loads(urllib.request.urlopen(os.environ["FRONT_URL"] + "/__linger", timeout=5).read())
check(lingered["injected"] >= 2 and f"security group {sg_id} of byoc-system/rwproxy still in use; retrying next poll" in log,
      f"the stand-in never met DependencyViolation on rwproxy's security group: {lingered}")
check(log.rindex(f"security group {sg_id} of byoc-system/rwproxy still in use") < log.index("removed finalizer service.k8s.aws/resources from byoc-system/rwproxy"),
      "the finalizer went while the security group was still there")
print("ok: a deleted Service is held until its NLB, target group and security group are gone (through DependencyViolation)")

# With no subnet tagged kubernetes.io/role/elb, subnets whose route table reaches an
# internet gateway are the internet-facing candidates (SubnetDiscoveryByReachability).
vpc = ec2.describe_subnets(SubnetIds=[a])["Subnets"][0]["VpcId"]
pub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.10.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
time.sleep(0.5)
check("byoc-system/rwproxy-public" not in lbs(), "an internet-facing NLB in a subnet without a route to an internet gateway")
igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
ec2.associate_route_table(RouteTableId=rt, SubnetId=pub)
public = wait("rwproxy-public's NLB", lambda: lbs().get("byoc-system/rwproxy-public"))
check(public["Scheme"] == "internet-facing" and [z["SubnetId"] for z in public["AvailabilityZones"]] == [pub],
      f"rwproxy-public: {public['Scheme']} in {public['AvailabilityZones']}, want internet-facing in {pub}")
wait("rwproxy-public's status", lambda: host("rwproxy-public") == [{"hostname": public["DNSName"]}])
print("ok: an internet-facing Service gets its NLB once a public subnet exists")

# A changed port: the old listener and target group go, new ones come; the NLB stays.
agent = lbs()["byoc-system/byoc-agent"]
kube("PATCH", "/api/v1/namespaces/byoc-system/services/byoc-agent",
     {"spec": {"ports": [{"name": "api", "port": 9443, "targetPort": 8443, "nodePort": 30943, "protocol": "TCP"}]}},
     "application/merge-patch+json")
def moved():
    ls = elb.describe_listeners(LoadBalancerArn=agent["LoadBalancerArn"])["Listeners"]
    return [l["Port"] for l in ls] == [9443] and ls
ls = wait("byoc-agent's listener on 9443", moved)
tg = elb.describe_target_groups(TargetGroupArns=[ls[0]["DefaultActions"][0]["TargetGroupArn"]])["TargetGroups"][0]
check(tg["Port"] == 30943, f"byoc-agent's new target group port {tg['Port']}")
wait("byoc-agent's old target group to go", lambda: len([t for t in elb.describe_target_groups()["TargetGroups"]
                                                        if tags(t["TargetGroupArn"]).get("service.k8s.aws/stack") == "byoc-system/byoc-agent"]) == 1)
wait("byoc-agent's security group on 9443 only", lambda: [(p["FromPort"], r["CidrIp"]) for p in ec2.describe_security_groups(
    GroupIds=agent["SecurityGroups"])["SecurityGroups"][0]["IpPermissions"] for r in p["IpRanges"]] == [(9443, "0.0.0.0/0")])
check(lbs()["byoc-system/byoc-agent"]["LoadBalancerArn"] == agent["LoadBalancerArn"], "a port change replaced the NLB")
print("ok: a port change moves the listener, target group and security group rule")

# A scheme change replaces the NLB (an NLB's scheme cannot change) and the status follows.
kube("PATCH", "/api/v1/namespaces/byoc-system/services/byoc-agent",
     {"metadata": {"annotations": {A + "aws-load-balancer-scheme": "internet-facing"}}}, "application/merge-patch+json")
new = wait("byoc-agent's internet-facing NLB", lambda: (lbs().get("byoc-system/byoc-agent") or {}).get("Scheme") == "internet-facing"
           and lbs()["byoc-system/byoc-agent"])
check(new["LoadBalancerArn"] != agent["LoadBalancerArn"] and new["LoadBalancerName"] != agent["LoadBalancerName"],
      "the scheme change kept the NLB")
check(agent["LoadBalancerArn"] not in [l["LoadBalancerArn"] for l in elb.describe_load_balancers()["LoadBalancers"]], "the internal NLB stayed")
wait("byoc-agent's status to follow", lambda: host("byoc-agent") == [{"hostname": new["DNSName"]}])
print("ok: a scheme change replaces the NLB")

# A Service that goes without the controller (its finalizer removed by hand) leaves its
# NLB behind, as on AWS.
kube("PATCH", "/api/v1/namespaces/byoc-system/services/byoc-agent", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
kube("DELETE", "/api/v1/namespaces/byoc-system/services/byoc-agent")
check(svc("byoc-agent") is None, "byoc-agent is still there without a finalizer")
time.sleep(0.5)
check("byoc-system/byoc-agent" in lbs(), "the stand-in collected an orphan without --gc-orphans")
print("ok: an orphaned stack stays without --gc-orphans")
EOF
kill "$ctl" 2>/dev/null || true
wait "$ctl" 2>/dev/null || true
"$py" "$here/lb_controller.py" --kubeconfig "$work/kubeconfig" --aws "$FRONT_URL" --region us-east-1 \
  --cluster byoc-test --default-target-type ip --owner $$ --lifetime 60 --interval 0.1 --gc-orphans 2>>"$LOG" &
ctl=$!
pids+=($ctl)
"$py" - <<'EOF' || { cat "$LOG" >&2; exit 1; }
from lib import *
def left():
    out = [t["TargetGroupName"] for t in elb.describe_target_groups()["TargetGroups"]
           if tags(t["TargetGroupArn"]).get("service.k8s.aws/stack") == "byoc-system/byoc-agent"]
    out += [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]
            if {t["Key"]: t["Value"] for t in g.get("Tags", [])}.get("service.k8s.aws/stack") == "byoc-system/byoc-agent"]
    return out + ["NLB"] * ("byoc-system/byoc-agent" in lbs())
wait("the orphaned NLB, target group and security group to be collected", lambda: not left())
check("byoc-system/rwproxy-public" in lbs(), "--gc-orphans collected a live Service's NLB")
print("ok: --gc-orphans collects the stack of a Service that is gone, and only that")

# The last Service holding the finalizer goes: the shared backend security group goes too.
backend = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("k8s-traffic-")]
check(len(backend) == 1, f"backend security groups {backend}")
kube("DELETE", "/api/v1/namespaces/byoc-system/services/rwproxy-public")
wait("rwproxy-public to go", lambda: svc("rwproxy-public") is None)
check(backend[0] not in [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]],
      "the backend security group outlived the last Service")
check(not lbs(), f"NLBs left: {list(lbs())}")
print("ok: the backend security group goes with the last Service")
EOF
kill "$ctl" 2>/dev/null || true
if [ -n "${VERBOSE:-}" ]; then cat "$LOG" >&2; fi
awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "PASS: tests/moto/test_lb_controller.sh in %.1f s\n", e - s }'
