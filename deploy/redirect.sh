#!/bin/sh
# Installs this node's capture rules for zring: nftables `table ip zring` (TPROXY to 15001,
# 15006, 15008, marks 0x539/0x111, fail-closed resets) and the policy route that delivers
# marked packets locally (`ip rule fwmark 0x111 lookup 133`, `local 0.0.0.0/0 dev lo table 133`),
# and where the kernel has IPv6 the same for IPv6 (`table ip6 zring`, `ip -6 rule`, `local ::/0`).
#
# The node-mode DaemonSet (deploy/zring-node.yaml) runs it as its init container, in the host network namespace
# with CAP_NET_ADMIN; it also runs by hand on a node as root. The rules themselves come from
# `zring redirect`, which prints and installs the same text the test lab proves rule by rule
# (src/capture.rs), so the two cannot drift. Idempotent: the table is replaced in one nft
# transaction and the policy rule is added only once.
#
# Environment:
#   ZRING_POD_CIDRS       the cluster's pod CIDR(s), comma-separated (required), e.g. 10.244.0.0/16
#                         or, dual stack, 10.244.0.0/16,fd00:10:244::/56
#   ZRING_POD_INTERFACES  nft iifname pattern of the node's pod interfaces (default veth*):
#                         veth* (kindnet, flannel, bridge), cali* (Calico), lxc* (Cilium), …
#   ZRING                 the zring binary (default: zring on PATH)
set -eu

: "${ZRING_POD_CIDRS:?set ZRING_POD_CIDRS to the cluster pod CIDR(s), e.g. 10.244.0.0/16}"
zring=${ZRING:-zring}

for tool in nft ip "$zring"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "redirect.sh: $tool not found" >&2; exit 1; }
done

# Show the operator what is about to be installed (the log of the init container keeps it).
"$zring" redirect print
"$zring" redirect apply

# Prove the result: the table is there with all its rules, and one policy rule routes the mark.
rules=$(nft list table ip zring)
for rule in zring-conn reply-to-zring captured-flow outbound inbound-hbone inbound-plaintext; do
  echo "$rules" | grep -q "comment \"$rule\"" || { echo "redirect.sh: rule $rule missing" >&2; exit 1; }
done
[ "$(ip rule show | grep -c 'fwmark 0x111 lookup 133')" = 1 ] || { echo "redirect.sh: policy rule missing or duplicated" >&2; exit 1; }
ip route show table 133 | grep -q 'local default dev lo' || { echo "redirect.sh: table 133 lacks its local route" >&2; exit 1; }
# The IPv6 half, wherever the kernel has IPv6 (where `zring redirect apply` installs it).
if ip -6 rule show >/dev/null 2>&1; then
  rules6=$(nft list table ip6 zring)
  for rule in zring-conn reply-to-zring captured-flow outbound inbound-hbone inbound-plaintext; do
    echo "$rules6" | grep -q "comment \"$rule\"" || { echo "redirect.sh: IPv6 rule $rule missing" >&2; exit 1; }
  done
  [ "$(ip -6 rule show | grep -c 'fwmark 0x111 lookup 133')" = 1 ] || { echo "redirect.sh: IPv6 policy rule missing or duplicated" >&2; exit 1; }
  ip -6 route show table 133 | grep -q 'local default dev lo' || { echo "redirect.sh: IPv6 table 133 lacks its local route" >&2; exit 1; }
fi
echo "redirect.sh: capture installed for pods ${ZRING_POD_CIDRS} behind ${ZRING_POD_INTERFACES:-veth*}"
