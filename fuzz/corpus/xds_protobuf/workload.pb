
§
appadefault
ô(:appaB
ô uJaRappaZv1`jappa‚default/allow¢Kubernetes//Pod/default/appa²1
&default/appb.default.svc.cluster.local
À>PÚ