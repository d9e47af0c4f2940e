¬
1š
*type.googleapis.com/istio.workload.Addresslj
appbdefaultappb.default.svc.cluster.local"
`eË*À>P2*spiffe://cluster.local/ns/default/sa/extra
wrong-name"*type.googleapis.com/istio.workload.Address*n1