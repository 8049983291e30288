#!/usr/bin/env python3
"""What an AWS endpoint holds for one environment, read with boto3's describe/list calls
(never byoc's own state), as JSON on stdout:

  {"tagged": {"aws.vpc/main": ["vpc-..."], ...},   # cloud ids by resource tag
   "details": {...}}                                # settings the tests check

Target groups and Elastic IPs are listed under "tg:<id>" and "eip:<id>" (they carry the
tag of the load balancer or NAT gateway they belong to).

EKS add-ons are read from FRONT (tests/moto/faults.py keeps them; moto has none).
Usage: inventory.py ENDPOINT ENVIRONMENT [FRONT]
"""
import json
import sys

import boto3

ENV_TAG = "byoc.risingwave.dev/environment"
RES_TAG = "byoc.risingwave.dev/resource"


def noncurrent_days(s3, bucket):
    """Days of the bucket's enabled noncurrent-version expiration rules (empty: none)."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except Exception:
        return []
    return [r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in rules
            if r.get("Status") == "Enabled" and "NoncurrentVersionExpiration" in r]


def main():
    endpoint, env = sys.argv[1], sys.argv[2]
    front = sys.argv[3] if len(sys.argv) > 3 else None
    c = lambda s: boto3.client(s, endpoint_url=endpoint, region_name="us-east-1")
    ec2, eks, iam, s3, elb = c("ec2"), c("eks"), c("iam"), c("s3"), c("elbv2")
    tagged, details = {}, {}

    def add(tags, cloud_id, prefix=""):
        t = {x["Key"]: x["Value"] for x in tags or []} if isinstance(tags, list) else (tags or {})
        if t.get(ENV_TAG) == env and RES_TAG in t:
            tagged.setdefault(prefix + t[RES_TAG], []).append(cloud_id)
            return t[RES_TAG]

    for v in ec2.describe_vpcs()["Vpcs"]:
        if add(v.get("Tags"), v["VpcId"]):
            details.setdefault("vpcCidr", []).append(v["CidrBlock"])
    for s in ec2.describe_subnets()["Subnets"]:
        rid = add(s.get("Tags"), s["SubnetId"])
        if rid:
            details.setdefault("subnets", {})[rid] = {"zone": s["AvailabilityZone"], "cidr": s["CidrBlock"]}
    for g in ec2.describe_internet_gateways()["InternetGateways"]:
        if add(g.get("Tags"), g["InternetGatewayId"]):
            details["igwAttached"] = [a["VpcId"] for a in g.get("Attachments", [])]
    for n in ec2.describe_nat_gateways()["NatGateways"]:
        if n["State"] not in ("deleted", "deleting"):
            add(n.get("Tags"), n["NatGatewayId"])
    for a in ec2.describe_addresses()["Addresses"]:
        add(a.get("Tags"), a["AllocationId"], "eip:")
    for t in ec2.describe_route_tables()["RouteTables"]:
        rid = add(t.get("Tags"), t["RouteTableId"])
        if rid:
            details.setdefault("routes", {})[rid] = {
                "routes": sorted(r.get("DestinationCidrBlock", "") + "->" + (r.get("NatGatewayId") or r.get("GatewayId") or "") for r in t["Routes"]),
                "subnets": len([a for a in t.get("Associations", []) if not a.get("Main")]),
            }
    table_ids = {}
    for t in ec2.describe_route_tables()["RouteTables"]:
        for tag in t.get("Tags", []):
            if tag["Key"] == RES_TAG:
                table_ids[t["RouteTableId"]] = tag["Value"]
    for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]:
        if e.get("State", "").lower() in ("deleted", "deleting"):
            continue
        rid = add(e.get("Tags"), e["VpcEndpointId"])
        if rid:
            details.setdefault("vpcEndpoints", {})[rid] = {
                "service": e["ServiceName"], "type": e["VpcEndpointType"],
                "routeTables": sorted(table_ids.get(t, t) for t in e.get("RouteTableIds", [])),
            }
    nat_zones = {}
    subnet_zone = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2.describe_subnets()["Subnets"]}
    for n in ec2.describe_nat_gateways()["NatGateways"]:
        if n["State"] not in ("deleted", "deleting"):
            nat_zones[n["NatGatewayId"]] = subnet_zone.get(n["SubnetId"])
    for t in ec2.describe_route_tables()["RouteTables"]:
        rid = table_ids.get(t["RouteTableId"])
        if rid and rid in details.get("routes", {}):
            details["routes"][rid]["natZones"] = sorted(nat_zones[r["NatGatewayId"]] for r in t["Routes"] if r.get("NatGatewayId") in nat_zones)
            details["routes"][rid]["subnetZones"] = sorted(subnet_zone.get(a["SubnetId"], "") for a in t.get("Associations", []) if a.get("SubnetId"))
    for g in ec2.describe_security_groups()["SecurityGroups"]:
        rid = add(g.get("Tags"), g["GroupId"])
        if rid:
            details.setdefault("ingress", {})[rid] = sorted(
                f"{p['IpProtocol']}:{p.get('FromPort', '')}:{r['CidrIp']}" for p in g["IpPermissions"] for r in p.get("IpRanges", [])
            )
    for s in ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]:
        if s.get("ServiceState", "").lower() in ("deleted", "deleting"):
            continue
        rid = add(s.get("Tags"), s["ServiceId"])
        if rid:
            perms = ec2.describe_vpc_endpoint_service_permissions(ServiceId=s["ServiceId"])["AllowedPrincipals"]
            details.setdefault("endpointServices", {})[rid] = {
                "loadBalancers": len(s.get("NetworkLoadBalancerArns", [])),
                "principals": sorted(p["Principal"] for p in perms),
                "acceptanceRequired": s.get("AcceptanceRequired"),
            }

    for name in eks.list_clusters()["clusters"]:
        cl = eks.describe_cluster(name=name)["cluster"]
        if add(cl.get("tags"), name):
            details["cluster"] = {"version": cl.get("version"), "subnets": len(cl["resourcesVpcConfig"].get("subnetIds", []))}
        for ng in eks.list_nodegroups(clusterName=name)["nodegroups"]:
            d = eks.describe_nodegroup(clusterName=name, nodegroupName=ng)["nodegroup"]
            rid = add(d.get("tags"), ng)
            if rid:
                sc = d["scalingConfig"]
                # By the group's resource name: a replacement runs under the next name
                # (system-2) while it is the same resource.
                details.setdefault("nodeGroups", {})[rid.split("/", 1)[-1]] = {
                    "min": sc["minSize"], "max": sc["maxSize"], "instanceTypes": d.get("instanceTypes"),
                    "labels": d.get("labels", {}), "taints": [t["key"] + "=" + t.get("value", "") + ":" + t["effect"] for t in d.get("taints", [])],
                    "amiType": d.get("amiType"), "version": d.get("version"), "launchTemplate": (d.get("launchTemplate") or {}).get("id"),
                }
        if front:
            from botocore.config import Config
            addons = boto3.client("eks", endpoint_url=front, region_name="us-east-1", config=Config(retries={"max_attempts": 10}))
            for a in addons.list_addons(clusterName=name)["addons"]:
                d = addons.describe_addon(clusterName=name, addonName=a)["addon"]
                if add(d.get("tags"), a):
                    details.setdefault("addons", {})[a] = {"role": d.get("serviceAccountRoleArn"), "status": d.get("status")}

    for t in ec2.describe_launch_templates()["LaunchTemplates"]:
        rid = add(t.get("Tags"), t["LaunchTemplateId"])
        if rid:
            v = ec2.describe_launch_template_versions(LaunchTemplateId=t["LaunchTemplateId"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
            ebs = v["BlockDeviceMappings"][0]["Ebs"]
            details.setdefault("launchTemplates", {})[rid] = {
                "id": t["LaunchTemplateId"], "device": v["BlockDeviceMappings"][0]["DeviceName"], "size": ebs.get("VolumeSize"),
                "type": ebs.get("VolumeType"), "encrypted": ebs.get("Encrypted"),
                "tags": {s["ResourceType"]: {x["Key"]: x["Value"] for x in s.get("Tags", [])} for s in v.get("TagSpecifications", [])},
                "httpTokens": (v.get("MetadataOptions") or {}).get("HttpTokens"),
            }
    for r in iam.list_roles()["Roles"]:
        tags = iam.list_role_tags(RoleName=r["RoleName"])["Tags"]
        rid = add(tags, r["RoleName"])
        if rid:
            trust = r["AssumeRolePolicyDocument"]
            trust = json.loads(trust) if isinstance(trust, str) else trust
            inline = iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]
            actions = []
            for p in inline:
                doc = iam.get_role_policy(RoleName=r["RoleName"], PolicyName=p)["PolicyDocument"]
                doc = json.loads(doc) if isinstance(doc, str) else doc
                for st in doc["Statement"]:
                    actions += st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]]
            details.setdefault("roles", {})[rid] = {"arn": r["Arn"], "trust": trust["Statement"][0], "actions": sorted(actions), "managed": sorted(attached)}
    for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]:
        got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=p["Arn"])
        if add(got.get("Tags"), p["Arn"]):
            details["oidc"] = {"arn": p["Arn"], "url": got["Url"], "clients": got["ClientIDList"]}

    for b in s3.list_buckets()["Buckets"]:
        try:
            tags = s3.get_bucket_tagging(Bucket=b["Name"])["TagSet"]
        except Exception:
            continue
        rid = add(tags, b["Name"])
        if rid:
            enc = s3.get_bucket_encryption(Bucket=b["Name"])["ServerSideEncryptionConfiguration"]["Rules"][0]
            pab = s3.get_public_access_block(Bucket=b["Name"])["PublicAccessBlockConfiguration"]
            details.setdefault("buckets", {})[rid] = {
                "versioning": s3.get_bucket_versioning(Bucket=b["Name"]).get("Status"),
                "encryption": enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
                "publicAccessBlocked": all(pab.values()),
                "noncurrentDays": noncurrent_days(s3, b["Name"]),
            }

    lbs = elb.describe_load_balancers()["LoadBalancers"]
    for lb in lbs:
        tags = elb.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
        rid = add(tags, lb["LoadBalancerArn"])
        if rid:
            ports = [l["Port"] for l in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]]
            details.setdefault("nlbs", {})[rid] = {"scheme": lb["Scheme"], "type": lb["Type"], "ports": ports}
    for tg in elb.describe_target_groups()["TargetGroups"]:
        tags = elb.describe_tags(ResourceArns=[tg["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]
        add(tags, tg["TargetGroupArn"], "tg:")

    json.dump({"tagged": tagged, "details": details}, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
