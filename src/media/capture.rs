//! Cameras: what produces raw pictures for the encode pipeline.
//!
//! A [`Capture`] adds its source elements to a fresh capture pipeline on every
//! attempt to open the camera; [`super::pipeline`] adds conversion, scaling to the
//! configured size and the appsink, and retries with backoff when the camera goes away.
//! Some cameras can be opened several ways (raw, MJPEG, ...): those are the
//! capture's variants, tried in order.

use super::encoder::{v4l2_caps_plan, CaptureCaps};
use super::MediaError;
use crate::config::{PictureSize, TestPattern, VideoConfig};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};

/// A camera (or anything that gives raw video).
pub trait Capture: Send + 'static {
    /// How many ways there are to open it; `add_source` is called with 0..variants().
    fn variants(&self) -> usize {
        1
    }

    /// Adds the source elements for `variant` to `pipeline` and returns the last one
    /// (its src pad gives raw video of any format and size).
    fn add_source(
        &self,
        pipeline: &gst::Pipeline,
        variant: usize,
    ) -> Result<gst::Element, MediaError>;

    /// For logs: "v4l2 /dev/video0", "pattern smpte".
    fn describe(&self) -> String;
}

/// `factory` with `props` (set from strings), or a clear error if it is not installed.
pub(crate) fn make(factory: &str, props: &[(&str, &str)]) -> Result<gst::Element, MediaError> {
    let e = gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::MissingElement(factory.to_string()))?;
    for (k, v) in props {
        set_str(&e, k, v);
    }
    Ok(e)
}

/// Sets a property from its string form if the element has it and the value parses;
/// logs otherwise (an encoder build without a knob, or with another type for it, must
/// not bring the stream down, and `set_property_from_str` would panic).
pub(crate) fn set_str(e: &gst::Element, key: &str, value: &str) {
    let Some(pspec) = e.find_property(key) else {
        tracing::warn!(element = %e.name(), "no property {key}; {value:?} not applied");
        return;
    };
    if !pspec.flags().contains(gst::glib::ParamFlags::WRITABLE) {
        tracing::warn!(element = %e.name(), "property {key} is read-only");
        return;
    }
    match gst::glib::Value::deserialize(value, pspec.value_type()) {
        Ok(v) => e.set_property_from_value(key, &v),
        Err(_) => tracing::warn!(element = %e.name(), "{key}: cannot use {value:?}"),
    }
}

/// Adds `elements` to `pipeline` and links them in order.
pub(crate) fn add_chain(
    pipeline: &gst::Pipeline,
    elements: &[gst::Element],
) -> Result<(), MediaError> {
    pipeline.add_many(elements)?;
    gst::Element::link_many(elements)?;
    Ok(())
}

/// The built-in test signal's picture: a test pattern with a running clock over it.
pub struct PatternCapture {
    pattern: TestPattern,
    size: PictureSize,
    fps: u32,
}

impl PatternCapture {
    pub fn new(pattern: TestPattern, video: &VideoConfig) -> Self {
        PatternCapture {
            pattern,
            size: video.size,
            fps: video.fps,
        }
    }
}

impl Capture for PatternCapture {
    fn add_source(
        &self,
        pipeline: &gst::Pipeline,
        _variant: usize,
    ) -> Result<gst::Element, MediaError> {
        let src = make(
            "videotestsrc",
            &[("is-live", "true"), ("pattern", self.pattern.nick())],
        )?;
        let caps = make(
            "capsfilter",
            &[(
                "caps",
                &format!(
                    "video/x-raw,format=I420,width={},height={},framerate={}/1",
                    self.size.width, self.size.height, self.fps
                ),
            )],
        )?;
        let clock = make(
            "timeoverlay",
            &[
                ("time-mode", "running-time"),
                ("font-desc", "Sans 36"),
                ("halignment", "center"),
                ("valignment", "bottom"),
            ],
        )?;
        let chain = [src, caps, clock];
        add_chain(pipeline, &chain)?;
        Ok(chain[2].clone())
    }

    fn describe(&self) -> String {
        format!("pattern {}", self.pattern.nick())
    }
}

/// A Video4Linux2 camera or HDMI capture card, asked for the configured size and
/// rate as raw video, then as MJPEG (decoded here), then with looser caps.
pub struct V4l2Capture {
    device: PathBuf,
    plan: Vec<CaptureCaps>,
}

impl V4l2Capture {
    pub fn new(device: &Path, video: &VideoConfig) -> Self {
        V4l2Capture {
            device: device.to_path_buf(),
            plan: v4l2_caps_plan(video.size, video.fps),
        }
    }
}

impl Capture for V4l2Capture {
    fn variants(&self) -> usize {
        self.plan.len()
    }

    fn add_source(
        &self,
        pipeline: &gst::Pipeline,
        variant: usize,
    ) -> Result<gst::Element, MediaError> {
        let plan = &self.plan[variant.min(self.plan.len() - 1)];
        let device = self.device.to_string_lossy();
        let mut chain = vec![
            // Buffers carry the driver's capture timestamps (on the monotonic clock).
            make("v4l2src", &[("device", &device)])?,
            make("capsfilter", &[("caps", &plan.caps)])?,
        ];
        if plan.jpeg {
            chain.push(make("jpegdec", &[])?);
        }
        add_chain(pipeline, &chain)?;
        Ok(chain.last().expect("chain is not empty").clone())
    }

    fn describe(&self) -> String {
        format!("v4l2 {}", self.device.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_str_applies_good_values_and_survives_bad_ones() {
        super::super::init().unwrap();
        let e = make(
            "x264enc",
            &[("bitrate", "1234"), ("speed-preset", "ultrafast")],
        )
        .unwrap();
        assert_eq!(e.property::<u32>("bitrate"), 1234);
        // Unknown property, unparsable value, read-only property: logged, not applied.
        set_str(&e, "no-such-property", "1");
        set_str(&e, "bitrate", "fast");
        set_str(&e, "speed-preset", "warp");
        set_str(&e, "parent", "x");
        assert_eq!(e.property::<u32>("bitrate"), 1234);
        let missing = make("no-such-element-braid", &[]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "GStreamer element \"no-such-element-braid\" is missing (is its plugin package installed?)"
        );
    }

    /// Factory names and capsfilter caps of what `add_source` put in, in link order.
    fn chain_of(capture: &dyn Capture, variant: usize) -> Vec<String> {
        let p = gst::Pipeline::new();
        let last = capture.add_source(&p, variant).unwrap();
        let mut out = Vec::new();
        let mut e = Some(last);
        while let Some(el) = e {
            let name = el.factory().unwrap().name().to_string();
            out.push(if name == "capsfilter" {
                el.property::<gst::Caps>("caps").to_string()
            } else {
                name
            });
            e = el
                .sink_pads()
                .first()
                .and_then(|pad| pad.peer())
                .and_then(|peer| peer.parent_element());
        }
        out.reverse();
        out
    }

    #[test]
    fn v4l2_capture_asks_raw_then_mjpeg_through_jpegdec() {
        super::super::init().unwrap();
        let v = VideoConfig {
            size: PictureSize {
                width: 1920,
                height: 1080,
            },
            fps: 25,
            ..VideoConfig::default()
        };
        let cam = V4l2Capture::new(Path::new("/dev/video0"), &v);
        assert_eq!(
            chain_of(&cam, 0),
            [
                "v4l2src",
                "video/x-raw, width=(int)1920, height=(int)1080, framerate=(fraction)25/1"
            ]
        );
        assert_eq!(
            chain_of(&cam, 1),
            [
                "v4l2src",
                "image/jpeg, width=(int)1920, height=(int)1080, framerate=(fraction)25/1",
                "jpegdec"
            ]
        );
        assert_eq!(chain_of(&cam, 3), ["v4l2src", "video/x-raw"]);
        let pattern = PatternCapture::new(TestPattern::Ball, &v);
        let chain = chain_of(&pattern, 0);
        assert_eq!(chain[0], "videotestsrc");
        assert!(chain[1].contains("width=(int)1920") && chain[1].contains("25/1"));
        assert_eq!(chain[2], "timeoverlay");
    }

    #[test]
    fn captures_describe_themselves() {
        let v = VideoConfig::default();
        let cam = V4l2Capture::new(Path::new("/dev/video3"), &v);
        assert_eq!(cam.describe(), "v4l2 /dev/video3");
        assert_eq!(cam.variants(), 4);
        assert_eq!(
            PatternCapture::new(TestPattern::Snow, &v).describe(),
            "pattern snow"
        );
    }
}
