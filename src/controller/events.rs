//! Publishing Kubernetes Events (events.k8s.io/v1), with repeats folded into an `EventSeries`.
//!
//! kube-runtime's `Recorder` folds every event with the same reason about the same object into
//! the first one for six minutes, keeping the first note: a second, different
//! `ToolQuarantined` would show the first list of tools. Here a repeat is an event with the same
//! type, reason *and note*, as client-go does it.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

/// How long a published event takes repeats into its series.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// The longest note the API server accepts (events.k8s.io/v1 limits it to 1 kB).
const MAX_NOTE_CHARS: usize = 1000;
/// What the controller did when it published (the Event's `action`).
pub const ACTION_RECONCILE: &str = "Reconcile";

/// Which event a publication repeats.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    warning: bool,
    reason: String,
    note: String,
}

/// The published event a key folds into.
struct Published {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events as one controller instance.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<SeriesKey, Published>>,
}

impl EventPublisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        EventPublisher {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            published: Mutex::default(),
        }
    }

    /// Publish an event about `regarding`; a repeat within the window counts into the series
    /// of the first.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note: String = note.chars().take(MAX_NOTE_CHARS).collect();
        let now = Timestamp::now();
        let key = SeriesKey {
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            warning: type_ == EventType::Warning,
            reason: reason.to_owned(),
            note: note.clone(),
        };
        let repeat = {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.retain(|_, p| p.last + SERIES_WINDOW > now);
            published.get_mut(&key).map(|p| {
                p.count += 1;
                p.last = now;
                (p.name.clone(), p.namespace.clone(), p.count)
            })
        };
        if let Some((name, namespace, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            events
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "series": series })),
                )
                .await?;
            return Ok(());
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(ACTION_RECONCILE.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Published {
                    name,
                    namespace,
                    count: 1,
                    last: now,
                },
            );
        Ok(())
    }
}
