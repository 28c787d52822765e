// SPDX-License-Identifier: MIT OR Apache-2.0

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::check::Checker;
use crate::element::lock;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "uigcparse",
        gst::DebugColorFlags::empty(),
        Some("uigc packet checker"),
    )
});

const STATS: &str = "uigcparse-stats";

pub struct UigcParse {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    checker: Checker,
    /// A caps event went downstream (pushed before the first segment when upstream, e.g.
    /// `udpsrc` without `caps`, sends none).
    caps_sent: Mutex<bool>,
}

impl UigcParse {
    fn post(&self, st: gst::Structure) {
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(st).src(&*obj).build());
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let verdict = {
            let map = buffer.map_readable().map_err(|_| {
                gst::error!(CAT, imp = self, "Cannot map the input buffer");
                gst::FlowError::Error
            })?;
            self.checker.check(&map, *CAT, &*self.obj())
        };
        if let Some(st) = self.checker.stats_due(STATS) {
            self.post(st);
        }
        match verdict {
            Ok(()) => self.srcpad.push(buffer),
            Err(_) => Ok(gst::FlowSuccess::Ok),
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Caps(_) => *lock(&self.caps_sent) = true,
            gst::EventView::Segment(_) if !std::mem::replace(&mut *lock(&self.caps_sent), true) => {
                let caps = gst::Caps::builder("video/x-uigc").build();
                if !self.srcpad.push_event(gst::event::Caps::new(&caps)) {
                    gst::warning!(CAT, imp = self, "Downstream refused {caps:?}");
                }
            }
            gst::EventView::Eos(_) => self.post(self.checker.stats(STATS)),
            _ => {}
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for UigcParse {
    const NAME: &'static str = "GstUigcParse";
    type Type = super::UigcParse;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                UigcParse::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |p| p.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                UigcParse::catch_panic_pad_function(parent, || false, |p| p.sink_event(pad, event))
            })
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ).build();
        Self {
            sinkpad,
            srcpad,
            checker: Checker::default(),
            caps_sent: Mutex::new(false),
        }
    }
}

impl ObjectImpl for UigcParse {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(Checker::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if !self.checker.set_property(pspec.name(), value) {
            unimplemented!("property {}", pspec.name());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.checker
            .property(pspec.name())
            .unwrap_or_else(|| unimplemented!("property {}", pspec.name()))
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for UigcParse {}

impl ElementImpl for UigcParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "uigc packet checker",
                "Codec/Parser/Video",
                "Checks uigc packets before any decoding work (size, header, packet check, work \
                 limits) and drops and counts invalid datagrams",
                "uigc developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("video/x-uigc").build();
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap();
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap();
            vec![src, sink]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *lock(&self.caps_sent) = false;
            self.checker.reset();
        }
        self.parent_change_state(transition)
    }
}
