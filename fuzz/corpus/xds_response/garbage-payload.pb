9
11
*type.googleapis.com/istio.workload.Addressÿÿÿx"*type.googleapis.com/istio.workload.Address*n1