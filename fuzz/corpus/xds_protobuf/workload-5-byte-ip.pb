
§
appadefault(:appaB
ô uJaRappaZv1`jappa‚default/allow¢Kubernetes//Pod/default/bad²1
&default/appb.default.svc.cluster.local
À>PÚ