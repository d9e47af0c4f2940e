j
appbdefaultappb.default.svc.cluster.local"
`eË*À>P2*spiffe://cluster.local/ns/default/sa/extra