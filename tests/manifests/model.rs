//! Loading the manifests: every YAML document of `k8s/*.yml` (what
//! `kubectl apply -f k8s/` applies) and of the on-demand `k8s/tools/*.yml`,
//! with small accessors.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

pub const NAMESPACE: &str = "catga-cluster";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// One object of one manifest file.
#[derive(Debug, Clone)]
pub struct Object {
    pub file: String,
    pub value: Value,
}

impl Object {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
    pub fn spec(&self) -> &Value {
        &self.value["spec"]
    }
    /// The pod template of a workload.
    pub fn pod(&self) -> &Value {
        match self.kind() {
            "Pod" => &self.value,
            _ => &self.value["spec"]["template"],
        }
    }
    pub fn is_workload(&self) -> bool {
        matches!(self.kind(), "Deployment" | "StatefulSet" | "Pod" | "Job")
    }
    /// Pods that run to completion (no probes, no Service).
    pub fn runs_once(&self) -> bool {
        matches!(self.kind(), "Pod" | "Job")
    }
    pub fn describe(&self) -> String {
        format!("{}/{} ({})", self.kind(), self.name(), self.file)
    }
    /// Objects that live outside any namespace.
    pub fn is_cluster_scoped(&self) -> bool {
        matches!(
            self.kind(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        )
    }
}

/// Parses every YAML document of `path` (empty documents skipped).
pub fn load_file(path: &Path) -> Vec<Object> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let file = path
        .strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string();
    serde_norway::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|err| panic!("{file} is not valid YAML: {err}"));
            (!value.is_null()).then(|| Object {
                file: file.clone(),
                value,
            })
        })
        .collect()
}

/// The top-level manifest files of k8s/, in the order kubectl applies them.
pub fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s"))
        .expect("k8s/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every object `kubectl apply -f k8s/` creates, in order.
pub fn objects() -> Vec<Object> {
    manifest_files().iter().flat_map(|f| load_file(f)).collect()
}

/// The objects of `k8s/tools/*.yml`: workloads applied on demand (the
/// toolbox pod, the load generator Job), not by `kubectl apply -f k8s/`.
pub fn tool_objects() -> Vec<Object> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s/tools"))
        .expect("k8s/tools/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| load_file(f)).collect()
}

/// The objects `kubectl kustomize DIR` renders (DIR relative to the
/// repository root), or None when kubectl is not installed.
pub fn kustomize(dir: &str) -> Option<Vec<Object>> {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    Some(
        serde_norway::Deserializer::from_str(&text)
            .filter_map(|doc| {
                let value = Value::deserialize(doc)
                    .unwrap_or_else(|err| panic!("{dir} renders invalid YAML: {err}"));
                (!value.is_null()).then(|| Object {
                    file: format!("kustomize {dir}"),
                    value,
                })
            })
            .collect(),
    )
}

/// Every rendering the project ships or documents: the kustomize base, the
/// dev and production overlays, production with the KEDA component, and the
/// example in another namespace.
pub const RENDERINGS: [&str; 5] = [
    "k8s/kustomize/base",
    "k8s/kustomize/dev",
    "k8s/kustomize/production",
    "tests/k8s/overlays/production-keda",
    "k8s/kustomize/other-namespace",
];

pub fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in k8s/"))
}

pub fn labels(value: &Value) -> BTreeMap<String, String> {
    value["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a label selector (`matchLabels`, `matchExpressions` with In/NotIn/Exists,
/// or a Service's plain map) selects `labels`.
pub fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(map) = selector.as_object() else {
        return false;
    };
    if !map.contains_key("matchLabels") && !map.contains_key("matchExpressions") {
        // A Service selector, or `{}` (everything).
        return map
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    }
    let plain = map
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| {
            m.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        });
    let exprs = map
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str() {
                    Some("In") => labels
                        .get(key)
                        .is_some_and(|l| values.contains(&l.as_str())),
                    Some("NotIn") => labels
                        .get(key)
                        .is_none_or(|l| !values.contains(&l.as_str())),
                    Some("Exists") => labels.contains_key(key),
                    Some("DoesNotExist") => !labels.contains_key(key),
                    other => panic!("unknown selector operator {other:?}"),
                }
            })
        });
    plain && exprs
}

/// The containers of a pod template, init containers included.
pub fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .collect()
}

pub fn main_container(obj: &Object) -> &Value {
    let containers = obj.pod()["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no containers", obj.describe()));
    containers
        .iter()
        .find(|c| c["name"] == obj.name())
        .unwrap_or(&containers[0])
}

/// A container port given by number or by name.
pub fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

/// Literal env values (name -> value) and secret references (name -> (secret, key)).
pub struct EnvSpec {
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, (String, String)>,
    /// Secret references marked `optional: true` (unset when the key is absent).
    pub optional: std::collections::BTreeSet<String>,
}

pub fn env_of(container: &Value) -> EnvSpec {
    let mut values = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut optional = std::collections::BTreeSet::new();
    assert!(
        container["envFrom"].is_null(),
        "envFrom is not used: every variable is listed where it is set"
    );
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_owned();
        if let Some(v) = e["value"].as_str() {
            values.insert(name, v.to_owned());
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            if r.get("optional").and_then(Value::as_bool) == Some(true) {
                optional.insert(name.clone());
            }
            secrets.insert(
                name,
                (
                    r["name"].as_str().expect("secret name").to_owned(),
                    r["key"].as_str().expect("secret key").to_owned(),
                ),
            );
        } else if !e["valueFrom"]["fieldRef"].is_null() {
            values.insert(name, "fieldRef".to_owned());
        } else {
            panic!("unsupported env entry {e}");
        }
    }
    EnvSpec {
        values,
        secrets,
        optional,
    }
}

/// Parses a Kubernetes quantity of CPU into millicores, or of memory into bytes.
pub fn quantity(raw: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("m", 1),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = raw.strip_suffix(suffix) {
            return n.parse::<u64>().expect("number") * factor;
        }
    }
    // Whole cores.
    raw.parse::<u64>().expect("number") * 1000
}
