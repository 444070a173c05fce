//! Publishing task events to containerd (over its ttrpc event service).

use containerd_shim::event::Event;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

/// Publishes events for one namespace.
pub struct Publisher {
    remote: RemotePublisher,
    namespace: String,
}

impl Publisher {
    /// A publisher for `namespace`.
    pub fn new(remote: RemotePublisher, namespace: &str) -> Publisher {
        Publisher {
            remote,
            namespace: namespace.to_string(),
        }
    }

    /// Publish `event` on its topic; failures are logged, not returned.
    pub fn publish(&self, event: impl Event + 'static) {
        let topic = event.topic();
        if let Err(e) =
            self.remote
                .publish(Context::default(), &topic, &self.namespace, Box::new(event))
        {
            log::warn!("cannot publish {topic}: {e}");
        }
    }
}
