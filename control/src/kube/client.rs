//! A blocking client for single requests (GET one object, LIST, POST, PUT with
//! `metadata.resourceVersion`, DELETE), for callers that are not async: IPAM in ferry-cni and
//! the node daemon, the WireGuard key publication. It owns a one-worker tokio runtime and
//! blocks on it; any number of threads may call it at once.
//!
//! Objects are JSON in and out ([`DynamicObject`]: what Ferry does not know is kept as it is
//! when an object is read and written back). `404` → [`ApiError::NotFound`], `409` →
//! [`ApiError::Conflict`], other statuses → [`ApiError::Status`] with the API's Status message.

use super::{ApiError, ConfigError, KubeConfig, ProtocolError, Resource, Timing};
use ::kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use ::kube::core::TypeMeta;
use serde_json::Value;

/// Objects per list page.
const PAGE_LIMIT: u32 = 500;

/// A blocking client of one API server.
pub struct KubeClient {
    client: ::kube::Client,
    url: String,
    // Dropped last: the client's connections live on it.
    rt: tokio::runtime::Runtime,
}

impl KubeClient {
    pub fn new(config: KubeConfig) -> Result<KubeClient, ConfigError> {
        KubeClient::with_timing(config, Timing::default())
    }

    pub fn with_timing(config: KubeConfig, timing: Timing) -> Result<KubeClient, ConfigError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-client")
            .enable_all()
            .build()
            .map_err(|e| ConfigError::Client(format!("tokio runtime: {e}")))?;
        let client = {
            let _guard = rt.enter();
            config.client(&timing, Some(timing.response_timeout), false)?
        };
        Ok(KubeClient {
            client,
            url: config.server_url(),
            rt,
        })
    }

    /// The server's URL (for messages).
    pub fn server_url(&self) -> String {
        self.url.clone()
    }

    fn api(&self, resource: &Resource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &resource.api)
    }

    /// The object as JSON, with `apiVersion` and `kind` (list items come without them).
    fn to_json(resource: &Resource, mut o: DynamicObject) -> Result<Value, ApiError> {
        o.types.get_or_insert_with(|| TypeMeta {
            api_version: resource.api.api_version.clone(),
            kind: resource.api.kind.clone(),
        });
        serde_json::to_value(o).map_err(|e| {
            ProtocolError(format!(
                "{}: cannot re-encode an object: {e}",
                resource.path()
            ))
            .into()
        })
    }

    fn from_json(resource: &Resource, object: &Value) -> Result<DynamicObject, ApiError> {
        serde_json::from_value(object.clone())
            .map_err(|e| ProtocolError(format!("{}: not an object: {e}", resource.path())).into())
    }

    /// `GET` one object.
    pub fn get(&self, resource: &Resource, name: &str) -> Result<Value, ApiError> {
        let o = self.rt.block_on(self.api(resource).get(name))?;
        KubeClient::to_json(resource, o)
    }

    /// `GET` one object of a namespaced resource (`/api/v1/namespaces/NS/pods/NAME`).
    pub fn get_in(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource.api);
        let o = self.rt.block_on(api.get(name))?;
        KubeClient::to_json(resource, o)
    }

    /// `GET` the whole collection (following `continue`): the items and the list's
    /// `resourceVersion`.
    pub fn list(&self, resource: &Resource) -> Result<(Vec<Value>, String), ApiError> {
        let api = self.api(resource);
        self.rt.block_on(async {
            let mut items = Vec::new();
            let mut lp = ListParams::default().limit(PAGE_LIMIT);
            loop {
                let page = api.list(&lp).await?;
                for o in page.items {
                    items.push(KubeClient::to_json(resource, o)?);
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => return Ok((items, page.metadata.resource_version.unwrap_or_default())),
                }
            }
        })
    }

    /// `POST` a new object (`409` if its name exists); the object as stored.
    pub fn create(&self, resource: &Resource, object: &Value) -> Result<Value, ApiError> {
        let o = KubeClient::from_json(resource, object)?;
        let stored = self
            .rt
            .block_on(self.api(resource).create(&PostParams::default(), &o))?;
        KubeClient::to_json(resource, stored)
    }

    /// `PUT` an object over the stored one; `409` unless its `metadata.resourceVersion` is the
    /// stored one. The object as stored (with its new `resourceVersion`).
    pub fn replace(&self, resource: &Resource, object: &Value) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().ok_or_else(|| {
            ProtocolError(format!(
                "{}: replace without metadata.name",
                resource.api.kind
            ))
        })?;
        let o = KubeClient::from_json(resource, object)?;
        let stored =
            self.rt
                .block_on(self.api(resource).replace(name, &PostParams::default(), &o))?;
        KubeClient::to_json(resource, stored)
    }

    /// `DELETE` one object.
    pub fn delete(&self, resource: &Resource, name: &str) -> Result<(), ApiError> {
        self.rt
            .block_on(self.api(resource).delete(name, &DeleteParams::default()))?;
        Ok(())
    }
}
