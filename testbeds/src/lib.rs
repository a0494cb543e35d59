//! Network-namespace labs (`ferry-lab`): nodes, pods and a router as real namespaces and veth
//! links. Built by the lab issue; until then the pipeline is exercised offline by `ferry replay`.
