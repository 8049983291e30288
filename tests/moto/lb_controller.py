"""A stand-in for the AWS Load Balancer Controller, against moto and the Kubernetes double.

Usage (with the moto venv's python, which has boto3):

    python tests/moto/lb_controller.py --kubeconfig FILE --aws URL --owner PID \
        (--cluster NAME [--region R] [--default-target-type instance|ip]
         | --from-deployment kube-system/aws-load-balancer-controller)
        [--lifetime S] [--interval 0.1] [--gc-orphans]

With `--from-deployment NS/NAME` it reads the controller's flags (`--cluster-name`,
`--aws-region`, `--aws-vpc-id`, `--default-target-type`) from that Deployment in the
double, as the controller's pod gets them, and does nothing while the Deployment is
absent or being deleted (no controller pod runs then): a test sees a wrong cluster name
or VPC id that byoc renders, and Services made before the controller is installed wait.
With `--cluster` the VPC is the EKS cluster's (DescribeCluster).

No API server and no real controller can run on these machines, so the tests of byoc's
AWS environment (issue 16 item 1) need something that does to moto what the controller
(v2.14, the version the bootstrap installs) does to AWS when a Service asks it for an NLB.
Every `--interval` seconds it lists the Services through the kubeconfig's server and, for
each one of `type: LoadBalancer` with `spec.loadBalancerClass: service.k8s.aws/nlb`
(others are left to other controllers, as the real one leaves them):

* not being deleted: resolves subnets, adds the finalizer `service.k8s.aws/resources`,
  makes (or finds, by tags) the NLB, its frontend security group, one TCP target group and
  one TCP listener per Service port, and writes the NLB's DNS name to
  `status.loadBalancer.ingress[0].hostname`. A second poll finds everything and writes
  nothing.
* being deleted (`metadata.deletionTimestamp`) and holding the finalizer: deletes the
  listeners, the NLB, the target groups and the security group, clears the status, then
  removes only its own finalizer, so the API server lets the Service go.

It stops by itself when `--owner` exits or after `--lifetime` seconds; every loop is
bounded. Each action is one line on stderr (`lb-controller: ...`).

What it follows, from the controller's documentation and behaviour
(github.com/kubernetes-sigs/aws-load-balancer-controller, docs/ and pkg/):

* docs/guide/service/annotations.md: `service.beta.kubernetes.io/aws-load-balancer-scheme`
  (`internal` by default), `...-nlb-target-type` (default: the controller's
  `--default-target-type`, itself `instance` by default; byoc renders `ip`; the older
  `aws-load-balancer-type: nlb-ip` also means ip), `...-proxy-protocol: "*"`
  (target-group attribute `proxy_protocol_v2.enabled=true`), `spec.loadBalancerSourceRanges`
  then `service.beta.kubernetes.io/load-balancer-source-ranges` for the frontend security
  group's ingress, `0.0.0.0/0` when neither is set (for internal NLBs too: the controller's
  frontend group defaults to `0.0.0.0/0`; an internal NLB is unreachable from outside the
  VPC anyway).
* docs/deploy/subnet_discovery.md: the candidates are the VPC's subnets tagged
  `kubernetes.io/role/internal-elb` (internal) or `kubernetes.io/role/elb`
  (internet-facing) with value `1` or empty; only when no subnet of the VPC carries that
  tag, the subnets whose reachability matches the scheme (public = its route table, or
  the VPC's main one, routes to an `igw-`; "SubnetDiscoveryByReachability", on by default
  since v2.12.1). Subnets tagged `kubernetes.io/cluster/<other>` (and not for this
  cluster) or with fewer than 8 free addresses are dropped; one subnet per zone, those
  tagged for this cluster first, then the lowest id. None left: the controller's error
  "unable to resolve at least one subnet ...", and nothing is made -- not even the
  finalizer, since the controller builds its model (subnets included) before adding it.
* docs/deploy/security_groups.md and docs/guide/service/nlb.md ("Security group"): since
  v2.6 a frontend security group per NLB, named `k8s-<ns[:8]>-<name[:8]>-<10 hex>`,
  ingress on each Service port from the source ranges, attached to the NLB.
* Names `k8s-<ns[:8]>-<name[:8]>-<10 hex>` (letters and digits only in the parts), at
  most 32 characters, the hex from a SHA-256 of the cluster, the Service's uid and what
  the name must change with (scheme for the NLB; port and target type for a target
  group). Tags on everything: `elbv2.k8s.aws/cluster=<cluster>`,
  `service.k8s.aws/stack=<ns>/<name>` and `service.k8s.aws/resource=` `LoadBalancer`
  (NLB), `ManagedLBSecurityGroup` (security group) or `<ns>/<name>:<port>` (target group).
* docs/deploy/security_groups.md, "Backend Security Groups": one shared backend group per
  cluster, `k8s-traffic-<cluster>-<10 hex of SHA-256(cluster)>`, description "[k8s] Shared
  Backend SecurityGroup for LoadBalancer", tags `elbv2.k8s.aws/cluster=<cluster>` and
  `elbv2.k8s.aws/resource=backend-sg`, attached to every NLB beside its frontend group and
  deleted when the last Service holding the finalizer lets go (a VPC cannot be deleted
  while it is there, which is what a destroy must wait for).
* A scheme change replaces the NLB (the scheme of an NLB cannot change); ports removed
  from the Service lose their listener and target group.

Where moto, or this stand-in, differs from AWS and the real controller:

* The Kubernetes double allocates no nodePorts, so an `instance` target group has no
  port to point at: the stand-in refuses such a Service port ("instance targets need a
  nodePort") unless the test gives `nodePort` itself. The real API server allocates one
  and the controller refuses only with `allocateLoadBalancerNodePorts: false`.
* The controller's Service mutating webhook (on by default in its Helm chart) sets
  `loadBalancerClass` on new LoadBalancer Services that have none; byoc's rendering
  (manifests/rendered/aws-load-balancer-controller.yaml) has no such webhook and the
  double runs no webhooks, so here a Service without the class is left alone, as it is
  on a cluster with byoc's rendering.
* moto's EKS `DescribeCluster` returns `resourcesVpcConfig` without `vpcId`; the VPC is
  then read from the cluster's first subnet.
* moto reports a new NLB `provisioning` and `active` from the first describe on (AWS takes
  minutes); its NLB ARNs read `loadbalancer/app/...` where AWS writes `loadbalancer/net/...`.
* moto deletes a security group that an NLB still uses; AWS answers
  `DependencyViolation` until the NLB and its network interfaces are gone, so the stand-in
  retries that on the next poll, and holds the finalizer until the group is gone.
* moto accepts a second NLB of an existing name with other settings (AWS answers
  `DuplicateLoadBalancerName`); the stand-in never asks, finding its NLB by tags first.
* The real controller opens the nodes' (instance targets) or pods' (ip targets) security
  groups to the backend group and registers the nodes or pod IPs in the target groups;
  the stand-in does neither (there are no nodes or pods in moto), so target groups stay
  empty.
* Orphans: the real controller cleans up only through its finalizer; a Service that went
  without it (finalizer removed by hand, namespace force-deleted) leaves its NLB behind
  in AWS. So does the stand-in, unless `--gc-orphans` is given: then NLBs, target groups
  and security groups tagged with this cluster whose Service no longer exists are deleted.
* Like the controller, it reconciles a Service when the Service changes (a new
  resourceVersion) or when it starts, not on every poll, so drift made in AWS behind its
  back is not repaired until then (the controller's resync period is hours). A Service
  whose reconcile failed is retried every poll (the controller backs off exponentially).
* No events: a failure is one log line (again only when its text changes).
"""
import argparse
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.exceptions import ClientError

CLASS = "service.k8s.aws/nlb"
FINALIZER = "service.k8s.aws/resources"
ANN = "service.beta.kubernetes.io/"
T_CLUSTER = "elbv2.k8s.aws/cluster"
T_STACK = "service.k8s.aws/stack"
T_RESOURCE = "service.k8s.aws/resource"
T_ELBV2_RESOURCE = "elbv2.k8s.aws/resource"


def log(msg):
    print(f"lb-controller: {msg}", file=sys.stderr, flush=True)


class Kube:
    """Plain HTTP to the kubeconfig's server with its bearer token."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig, encoding="utf-8").read()
        server = re.search(r"^\s*server:\s*(\S+)", text, re.M)
        token = re.search(r"^\s*token:\s*(\S+)", text, re.M)
        if not server:
            raise SystemExit(f"{kubeconfig}: no `server:` line; give the kube double's kubeconfig")
        self.server = server.group(1).rstrip("/")
        self.token = token.group(1) if token else None

    def call(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        # Named, as the real controller's client names itself, so tests can tell its writes apart.
        req.add_header("User-Agent", "aws-load-balancer-controller-stand-in")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def services(self):
        return self.call("GET", "/api/v1/services").get("items", [])

    def patch(self, svc, body, status=False):
        m = svc["metadata"]
        path = f"/api/v1/namespaces/{m['namespace']}/services/{m['name']}" + ("/status" if status else "")
        return self.call("PATCH", path, body, "application/merge-patch+json")


def sanitize(s):
    return re.sub(r"[^A-Za-z0-9]", "", s)


def k8s_name(ns, name, *parts):
    digest = hashlib.sha256("".join(parts).encode()).hexdigest()
    return f"k8s-{sanitize(ns)[:8]}-{sanitize(name)[:8]}-{digest[:10]}"


def tags_dict(tags):
    return {t["Key"]: t["Value"] for t in tags or []}


def tag_list(d):
    return [{"Key": k, "Value": v} for k, v in d.items()]


class ModelError(Exception):
    pass


class Controller:
    def __init__(self, args):
        self.kube = Kube(args.kubeconfig)
        self.aws = args.aws
        self.deployment = args.from_deployment
        self.gc_orphans = args.gc_orphans
        self.last_error = {}
        self.finalized = set()
        self.converged = {}  # stack -> (uid, resourceVersion) last converged
        self._lbs = None
        self.waiting = False
        self.config = None
        if args.cluster:
            self.configure({"cluster-name": args.cluster, "aws-region": args.region,
                            "default-target-type": args.default_target_type})

    def configure(self, config):
        """Takes the controller's flags (without `--`): cluster-name, aws-region, and
        optionally aws-vpc-id and default-target-type."""
        if config == self.config:
            return
        if not config.get("cluster-name") or not config.get("aws-region"):
            raise ModelError(f"the controller needs --cluster-name and --aws-region, got {config}")
        if config.get("default-target-type", "instance") not in ("instance", "ip"):
            raise ModelError(f"invalid value {config['default-target-type']} for default target type")
        kw = dict(endpoint_url=self.aws, region_name=config["aws-region"],
                  aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                  aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
        self.ec2 = boto3.client("ec2", **kw)
        self.elb = boto3.client("elbv2", **kw)
        self.eks = boto3.client("eks", **kw)
        self.cluster = config["cluster-name"]
        self.default_target_type = config.get("default-target-type", "instance")
        self._vpc = config.get("aws-vpc-id")
        self.config = config
        self.converged = {}  # a new configuration reconciles every Service again, as a restart does
        log(f"configured: cluster {self.cluster}, region {config['aws-region']}, "
            f"VPC {self._vpc or '(from EKS)'}, default target type {self.default_target_type}")

    def from_deployment(self):
        """The running controller's flags from its Deployment, or None when it is not
        installed (then nothing is reconciled, as when no controller pod runs)."""
        ns, name = self.deployment.split("/", 1)
        try:
            dep = self.kube.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        if dep["metadata"].get("deletionTimestamp"):
            return None
        containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        config = {}
        for arg in (containers[0].get("args") or []) if containers else []:
            if arg.startswith("--") and "=" in arg:
                key, value = arg[2:].split("=", 1)
                config[key] = value
        return {k: v for k, v in config.items() if k in ("cluster-name", "aws-region", "aws-vpc-id", "default-target-type")}

    # ---- AWS lookups -------------------------------------------------------------------

    def vpc(self):
        """The VPC's id: --aws-vpc-id, as the controller takes it, else the EKS cluster's."""
        if self._vpc is None:
            cfg = self.eks.describe_cluster(name=self.cluster)["cluster"]["resourcesVpcConfig"]
            vpc_id = cfg.get("vpcId")
            if not vpc_id:  # moto leaves vpcId out; AWS always gives it
                subnet = self.ec2.describe_subnets(SubnetIds=cfg["subnetIds"][:1])["Subnets"][0]
                vpc_id = subnet["VpcId"]
            self._vpc = vpc_id
        return self._vpc

    def our_load_balancers(self):
        """{stack: (lb, tags)} for the NLBs tagged with this cluster."""
        lbs = []
        for page in self.elb.get_paginator("describe_load_balancers").paginate():
            lbs += page["LoadBalancers"]
        return {t[T_STACK]: (lb, t) for lb, t in self._tagged(lbs, "LoadBalancerArn")}

    def our_target_groups(self):
        tgs = []
        for page in self.elb.get_paginator("describe_target_groups").paginate():
            tgs += page["TargetGroups"]
        return self._tagged(tgs, "TargetGroupArn")

    def _tagged(self, items, key):
        out = []
        for i in range(0, len(items), 20):  # DescribeTags takes at most 20 ARNs
            chunk = items[i:i + 20]
            descs = self.elb.describe_tags(ResourceArns=[x[key] for x in chunk])["TagDescriptions"]
            by_arn = {d["ResourceArn"]: tags_dict(d["Tags"]) for d in descs}
            for x in chunk:
                t = by_arn.get(x[key], {})
                if t.get(T_CLUSTER) == self.cluster and T_STACK in t:
                    out.append((x, t))
        return out

    def our_security_groups(self, stack=None):
        filters = [{"Name": f"tag:{T_CLUSTER}", "Values": [self.cluster]},
                   {"Name": f"tag:{T_RESOURCE}", "Values": ["ManagedLBSecurityGroup"]}]
        if stack:
            filters.append({"Name": f"tag:{T_STACK}", "Values": [stack]})
        return self.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]

    def backend_security_group(self, create):
        """The cluster's shared backend group's id (made when `create`), or None."""
        vpc_id = self.vpc()
        found = self.ec2.describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": f"tag:{T_CLUSTER}", "Values": [self.cluster]},
            {"Name": f"tag:{T_ELBV2_RESOURCE}", "Values": ["backend-sg"]}])["SecurityGroups"]
        if found or not create:
            return found[0]["GroupId"] if found else None
        name = f"k8s-traffic-{sanitize(self.cluster)[:232]}-{hashlib.sha256(self.cluster.encode()).hexdigest()[:10]}"
        gid = self.ec2.create_security_group(
            GroupName=name, Description="[k8s] Shared Backend SecurityGroup for LoadBalancer", VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(
                {T_CLUSTER: self.cluster, T_ELBV2_RESOURCE: "backend-sg"})}])["GroupId"]
        log(f"created backend security group {gid} ({name})")
        return gid

    def release_backend_security_group(self, services, leaving):
        """Deletes the backend group once no Service but `leaving` (and those finalized
        earlier in this poll) holds the finalizer; True when it is gone or still needed,
        False while AWS still holds it."""
        for svc in services:
            m = svc["metadata"]
            stack = f"{m['namespace']}/{m['name']}"
            if stack != leaving and stack not in self.finalized and FINALIZER in (m.get("finalizers") or []):
                return True
        gid = self.backend_security_group(create=False)
        if gid is None:
            return True
        try:
            self.ec2.delete_security_group(GroupId=gid)
            log(f"deleted backend security group {gid}: no Service needs it")
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] != "DependencyViolation":
                raise
            log(f"backend security group {gid} still in use; retrying next poll")
            return False

    def resolve_subnets(self, scheme):
        vpc_id = self.vpc()
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        role = "kubernetes.io/role/internal-elb" if scheme == "internal" else "kubernetes.io/role/elb"
        candidates = [s for s in subnets if tags_dict(s.get("Tags")).get(role) in ("", "1")]
        if not candidates:
            # No subnet has the role tag: reachability decides (public = routes to an igw).
            public = self.public_subnets(vpc_id, subnets)
            want_public = scheme == "internet-facing"
            candidates = [s for s in subnets if (s["SubnetId"] in public) == want_public]
        mine = f"kubernetes.io/cluster/{self.cluster}"
        other_cluster, few_ips, eligible = 0, 0, []
        for s in candidates:
            t = tags_dict(s.get("Tags"))
            if mine not in t and any(k.startswith("kubernetes.io/cluster/") for k in t):
                other_cluster += 1
            elif s.get("AvailableIpAddressCount", 0) < 8:
                few_ips += 1
            else:
                eligible.append(s)
        chosen = {}
        for s in sorted(eligible, key=lambda s: (mine not in tags_dict(s.get("Tags")), s["SubnetId"])):
            chosen.setdefault(s["AvailabilityZone"], s)
        if not chosen:
            raise ModelError(
                f"unable to resolve at least one subnet. Evaluated {len(candidates)} subnets: "
                f"{other_cluster} are tagged for other clusters, and {few_ips} have insufficient "
                "available IP addresses")
        return sorted(s["SubnetId"] for s in chosen.values())

    def public_subnets(self, vpc_id, subnets):
        tables = self.ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
        main, explicit = None, {}
        for rt in tables:
            for a in rt.get("Associations", []):
                if a.get("Main"):
                    main = rt
                elif a.get("SubnetId"):
                    explicit[a["SubnetId"]] = rt
        public = set()
        for s in subnets:
            rt = explicit.get(s["SubnetId"], main) or {}
            if any(r.get("GatewayId", "").startswith("igw") for r in rt.get("Routes", [])):
                public.add(s["SubnetId"])
        return public

    # ---- one Service ---------------------------------------------------------------------

    def desired(self, svc):
        m, spec = svc["metadata"], svc.get("spec", {})
        ann = m.get("annotations") or {}
        ns, name, uid = m["namespace"], m["name"], m.get("uid", "")
        scheme = ann.get(ANN + "aws-load-balancer-scheme", "internal")
        if scheme not in ("internal", "internet-facing"):
            raise ModelError(f"invalid load balancer scheme {scheme!r}: use internal or internet-facing")
        target_type = ann.get(ANN + "aws-load-balancer-nlb-target-type", self.default_target_type)
        if ann.get(ANN + "aws-load-balancer-type") == "nlb-ip":  # the older spelling of ip targets
            target_type = "ip"
        if target_type not in ("instance", "ip"):
            raise ModelError(f"invalid target type {target_type!r}: use instance or ip")
        ranges = spec.get("loadBalancerSourceRanges") or [
            r.strip() for r in ann.get(ANN + "load-balancer-source-ranges", "").split(",") if r.strip()
        ] or ["0.0.0.0/0"]
        ports = []
        for p in spec.get("ports") or []:
            proto = p.get("protocol", "TCP")
            if proto != "TCP":
                raise ModelError(f"port {p.get('port')}: only TCP is handled by the stand-in, not {proto}")
            if target_type == "instance":
                if not p.get("nodePort"):
                    raise ModelError(f"port {p['port']}: instance targets need a nodePort and none is allocated")
                tg_port = p["nodePort"]
            else:
                tp = p.get("targetPort", p["port"])
                tg_port = tp if isinstance(tp, int) else p["port"]
            ports.append((p["port"], tg_port))
        if not ports:
            raise ModelError("the Service has no ports")
        stack = f"{ns}/{name}"
        base = {T_CLUSTER: self.cluster, T_STACK: stack}
        return dict(
            ns=ns, name=name, stack=stack, scheme=scheme, target_type=target_type, ranges=ranges,
            ports=ports, base=base,
            proxy_protocol=ann.get(ANN + "aws-load-balancer-proxy-protocol") == "*",
            lb_name=k8s_name(ns, name, self.cluster, uid, scheme),
            sg_name=k8s_name(ns, name, self.cluster, name, ns, uid),
            tg_name=lambda port, tg_port: k8s_name(ns, name, self.cluster, uid, str(tg_port), str(port), target_type, "TCP"),
        )

    def ensure(self, svc):
        """Converges one Service's stack; returns the Service's resourceVersion after the
        stand-in's own writes, so an unchanged Service is not reconciled again."""
        lbs = self.lbs()
        d = self.desired(svc)
        subnets = self.resolve_subnets(d["scheme"])
        m = svc["metadata"]
        if FINALIZER not in (m.get("finalizers") or []):
            fins = (m.get("finalizers") or []) + [FINALIZER]
            svc = self.kube.patch(svc, {"metadata": {"finalizers": fins, "resourceVersion": m["resourceVersion"]}})
            m = svc["metadata"]
            log(f"added finalizer {FINALIZER} to {d['stack']}")
        vpc_id = self.vpc()
        groups = [self.ensure_security_group(d, vpc_id), self.backend_security_group(create=True)]
        found = lbs.get(d["stack"])
        if found and found[0]["Scheme"] != d["scheme"]:
            log(f"{d['stack']}: scheme changed to {d['scheme']}; replacing NLB {found[0]['LoadBalancerName']}")
            self.delete_lb(found[0])
            found = None
        if found:
            lb = found[0]
            if sorted(lb.get("SecurityGroups") or []) != sorted(groups):
                self.elb.set_security_groups(LoadBalancerArn=lb["LoadBalancerArn"], SecurityGroups=groups)
                log(f"set security groups {groups} on {lb['LoadBalancerName']}")
        else:
            tags = dict(d["base"], **{T_RESOURCE: "LoadBalancer"})
            lb = self.elb.create_load_balancer(
                Name=d["lb_name"], Type="network", Scheme=d["scheme"], Subnets=subnets,
                SecurityGroups=groups, Tags=tag_list(tags))["LoadBalancers"][0]
            log(f"created NLB {lb['LoadBalancerName']} ({d['scheme']}) in {','.join(subnets)} for {d['stack']}")
        self.ensure_ports(d, vpc_id, lb)
        want = [{"hostname": lb["DNSName"]}]
        if ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") != want:
            svc = self.kube.patch(svc, {"status": {"loadBalancer": {"ingress": want}}}, status=True)
            log(f"set {d['stack']} status hostname {lb['DNSName']}")
        return svc["metadata"]["resourceVersion"]

    def ensure_security_group(self, d, vpc_id):
        groups = self.our_security_groups(d["stack"])
        if groups:
            sg = groups[0]
        else:
            tags = dict(d["base"], **{T_RESOURCE: "ManagedLBSecurityGroup"})
            gid = self.ec2.create_security_group(
                GroupName=d["sg_name"], Description="[k8s] Managed SecurityGroup for LoadBalancer", VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}])["GroupId"]
            log(f"created security group {gid} ({d['sg_name']}) for {d['stack']}")
            sg = {"GroupId": gid, "IpPermissions": []}
            # A new group allows all egress by default, as the controller's do.
        have = set()
        for p in sg.get("IpPermissions", []):
            for r in p.get("IpRanges", []):
                have.add((p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        want = {("tcp", port, port, cidr) for port, _ in d["ports"] for cidr in d["ranges"]}
        perms = lambda rules: [{"IpProtocol": pr, "FromPort": f, "ToPort": t, "IpRanges": [{"CidrIp": c}]}
                               for pr, f, t, c in sorted(rules)]
        if want - have:
            self.ec2.authorize_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=perms(want - have))
            log(f"opened {sorted(want - have)} on {sg['GroupId']} for {d['stack']}")
        if have - want:
            self.ec2.revoke_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=perms(have - want))
            log(f"closed {sorted(have - want)} on {sg['GroupId']} for {d['stack']}")
        return sg["GroupId"]

    def ensure_ports(self, d, vpc_id, lb):
        listeners = {l["Port"]: l for l in self.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
        tgs = {t[T_RESOURCE]: tg for tg, t in self.our_target_groups() if t[T_STACK] == d["stack"]}
        wanted_ports = {port for port, _ in d["ports"]}
        for port, tg_port in d["ports"]:
            key = f"{d['stack']}:{port}"
            tg = tgs.get(key)
            if tg and (tg["Port"] != tg_port or tg["TargetType"] != d["target_type"]):
                if port in listeners:
                    self.elb.delete_listener(ListenerArn=listeners.pop(port)["ListenerArn"])
                self.elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
                log(f"replaced target group {tg['TargetGroupName']} of {key}")
                tg = None
            if not tg:
                tags = dict(d["base"], **{T_RESOURCE: key})
                tg = self.elb.create_target_group(
                    Name=d["tg_name"](port, tg_port), Protocol="TCP", Port=tg_port, VpcId=vpc_id,
                    TargetType=d["target_type"], Tags=tag_list(tags))["TargetGroups"][0]
                log(f"created target group {tg['TargetGroupName']} ({d['target_type']}, port {tg_port}) for {key}")
            attrs = tags_dict([{"Key": a["Key"], "Value": a["Value"]} for a in
                               self.elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]])
            pp = "true" if d["proxy_protocol"] else "false"
            if attrs.get("proxy_protocol_v2.enabled", "false") != pp:
                self.elb.modify_target_group_attributes(
                    TargetGroupArn=tg["TargetGroupArn"], Attributes=[{"Key": "proxy_protocol_v2.enabled", "Value": pp}])
                log(f"set proxy_protocol_v2.enabled={pp} on {tg['TargetGroupName']}")
            l = listeners.get(port)
            forwards = l and [a.get("TargetGroupArn") for a in l["DefaultActions"]] == [tg["TargetGroupArn"]]
            if l and not forwards:
                self.elb.delete_listener(ListenerArn=l["ListenerArn"])
                l = None
            if not l:
                self.elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=port,
                                         DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
                log(f"created TCP listener {port} on {lb['LoadBalancerName']} for {key}")
        for port, l in listeners.items():
            if port not in wanted_ports:
                self.elb.delete_listener(ListenerArn=l["ListenerArn"])
                log(f"deleted listener {port} of {lb['LoadBalancerName']}: the port left {d['stack']}")
        for key, tg in tgs.items():
            if int(key.rsplit(":", 1)[1]) not in wanted_ports:
                self.elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
                log(f"deleted target group {tg['TargetGroupName']}: the port left {d['stack']}")

    # ---- deletion ------------------------------------------------------------------------

    def delete_lb(self, lb):
        for l in self.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
            self.elb.delete_listener(ListenerArn=l["ListenerArn"])
            log(f"deleted listener {l['Port']} of {lb['LoadBalancerName']}")
        self.elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        log(f"deleted NLB {lb['LoadBalancerName']}")

    def delete_stack(self, stack):
        """Deletes what the stack owns; True once nothing is left."""
        lbs = self.lbs()
        if stack in lbs:
            self.delete_lb(lbs.pop(stack)[0])
        for tg, t in self.our_target_groups():
            if t[T_STACK] == stack:
                self.elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
                log(f"deleted target group {tg['TargetGroupName']} of {stack}")
        done = True
        for sg in self.our_security_groups(stack):
            try:
                self.ec2.delete_security_group(GroupId=sg["GroupId"])
                log(f"deleted security group {sg['GroupId']} of {stack}")
            except ClientError as e:
                if e.response["Error"]["Code"] != "DependencyViolation":
                    raise
                log(f"security group {sg['GroupId']} of {stack} still in use; retrying next poll")
                done = False
        return done

    def finalize(self, svc, services):
        m = svc["metadata"]
        stack = f"{m['namespace']}/{m['name']}"
        self.converged.pop(stack, None)
        if not self.delete_stack(stack):
            return
        if not self.release_backend_security_group(services, stack):
            return
        if ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            svc = self.kube.patch(svc, {"status": {"loadBalancer": None}}, status=True)
        rest = [f for f in m.get("finalizers") or [] if f != FINALIZER]
        self.kube.patch(svc, {"metadata": {"finalizers": rest, "resourceVersion": svc["metadata"]["resourceVersion"]}})
        log(f"removed finalizer {FINALIZER} from {stack}")
        self.finalized.add(stack)

    # ---- the loop ------------------------------------------------------------------------

    def poll(self):
        if self.deployment:
            config = self.from_deployment()
            if config is None:
                if not self.waiting:
                    log(f"Deployment {self.deployment} not found: no controller runs, nothing is reconciled")
                    self.waiting = True
                return
            self.waiting = False
            try:
                self.configure(config)
            except ModelError as e:
                if self.last_error.get("config") != str(e):
                    log(f"Deployment {self.deployment}: {e}")
                    self.last_error["config"] = str(e)
                return
        services = self.kube.services()
        self.finalized = set()  # stacks whose finalizer this poll removed
        self._lbs = None
        existing = set()
        for svc in services:
            m, spec = svc["metadata"], svc.get("spec", {})
            stack = f"{m['namespace']}/{m['name']}"
            existing.add(stack)
            ours = spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") == CLASS
            held = FINALIZER in (m.get("finalizers") or [])
            try:
                if m.get("deletionTimestamp") or not ours:
                    # Deleted, or no longer an NLB Service of this class: clean up if we made it.
                    if held:
                        self.finalize(svc, services)
                    continue
                # Like the controller, which reconciles a Service when it changes (and on
                # its restart), not on every tick: drift in AWS is not repaired meanwhile.
                if self.converged.get(stack) == (m.get("uid"), m.get("resourceVersion")):
                    continue
                rv = self.ensure(svc)
                self.converged[stack] = (m.get("uid"), rv)
                self.last_error.pop(stack, None)
            except (ModelError, ClientError, urllib.error.URLError) as e:
                text = str(e)
                if isinstance(e, urllib.error.HTTPError):
                    text = f"{e} {e.read()[:300]!r}"
                if self.last_error.get(stack) != text:  # one line per distinct failure
                    log(f"{stack}: {text}")
                    self.last_error[stack] = text
        for stack in set(self.converged) - existing:
            del self.converged[stack]
        if self.gc_orphans:
            self.collect(existing, services)

    def lbs(self):
        """This poll's {stack: (NLB, tags)}, listed on first use."""
        if self._lbs is None:
            self._lbs = self.our_load_balancers()
        return self._lbs

    def collect(self, existing, services):
        stacks = set(self.lbs()) | {t[T_STACK] for _, t in self.our_target_groups()}
        stacks |= {tags_dict(sg.get("Tags"))[T_STACK] for sg in self.our_security_groups()}
        for stack in sorted(stacks - existing):
            log(f"{stack}: the Service is gone; collecting its resources")
            self.delete_stack(stack)
        self.release_backend_security_group(services, None)


def owner_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--aws", required=True, help="moto's URL, e.g. http://127.0.0.1:5000")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--cluster", help="the EKS cluster's name (its VPC holds the NLBs); or --from-deployment")
    p.add_argument("--default-target-type", default="instance", help="the controller's --default-target-type")
    p.add_argument("--from-deployment", metavar="NS/NAME",
                   help="take --cluster-name, --aws-region, --aws-vpc-id and --default-target-type from the "
                        "controller's Deployment (e.g. kube-system/aws-load-balancer-controller) and act only "
                        "while it exists")
    p.add_argument("--owner", type=int, required=True, help="stop when this process exits")
    p.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between polls")
    p.add_argument("--gc-orphans", action="store_true",
                   help="delete stacks whose Service is gone (the real controller does not)")
    args = p.parse_args()
    if not args.cluster and not args.from_deployment:
        p.error("give --cluster, or --from-deployment to read it from the controller's Deployment")
    ctl = Controller(args)
    deadline = time.monotonic() + args.lifetime
    polls = int(args.lifetime / max(args.interval, 0.01)) + 1
    log(f"watching Services of class {CLASS}" + (f" while Deployment {args.from_deployment} exists" if args.from_deployment else ""))
    for _ in range(polls):  # bounded: at most lifetime/interval polls
        if time.monotonic() > deadline or not owner_alive(args.owner):
            break
        try:
            ctl.poll()
        except (ClientError, urllib.error.URLError, OSError) as e:
            log(f"poll failed: {e}")
        time.sleep(args.interval)
    log("stopping")


if __name__ == "__main__":
    main()
