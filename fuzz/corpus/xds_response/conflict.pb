ý
1Ù
*type.googleapis.com/istio.workload.Addressª
§
appadefault
ô(:appaB
ô uJaRappaZv1`jappa‚default/allow¢Kubernetes//Pod/default/appa²1
&default/appb.default.svc.cluster.local
À>PÚKubernetes//Pod/default/appaÿ
1Ú
*type.googleapis.com/istio.workload.Address«
¨
appadefault
ô(:appaB
ô uJaRappaZv1`jappa‚default/allow¢Kubernetes//Pod/default/thief²1
&default/appb.default.svc.cluster.local
À>PÚKubernetes//Pod/default/thiefý
1Ù
*type.googleapis.com/istio.workload.Addressª
§
appadefault
ô	(:appaB
ô uJaRappaZv1`jappa‚default/allow¢Kubernetes//Pod/default/appa²1
&default/appb.default.svc.cluster.local
À>PÚKubernetes//Pod/default/appa"*type.googleapis.com/istio.workload.Address*n12Kubernetes//Pod/default/gone