#!/bin/bash
# EC2 user data for a Nitro Enclaves ECS container instance (Amazon Linux 2023 ECS-optimized AMI).
# The launch template must also set EnclaveOptions.Enabled=true.
set -euo pipefail

CLUSTER="${CLUSTER:-nitrodeck}"

dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel

# Resources for enclaves (see allocator.yaml next to this file for the sizing rule).
cat > /etc/nitro_enclaves/allocator.yaml <<'YAML'
---
memory_mib: 3072
cpu_count: 2
YAML
# Only KMS may be reached through the vsock-proxy.
cat > /etc/nitro_enclaves/vsock-proxy.yaml <<'YAML'
allowlist:
- {address: kms.us-east-1.amazonaws.com, port: 443}
YAML

systemctl enable --now nitro-enclaves-allocator.service
# Leave nitro-enclaves-vsock-proxy.service disabled: `nitrodeck up` runs the proxy on vsock port
# 8000 itself (same allowlist file), and two proxies cannot both listen on that port.

# Join the cluster and advertise the capability the task definition's placement constraint needs.
cat >> /etc/ecs/ecs.config <<CFG
ECS_CLUSTER=${CLUSTER}
ECS_INSTANCE_ATTRIBUTES={"nitro-enclaves":"true"}
CFG
