//! Video encoder choice and every encoder's quirks, in one table.
//!
//! Which encoder runs is decided against an [`ElementRegistry`] (the real GStreamer
//! registry, or [`FakeRegistry`] in tests), so the choice is testable on a machine
//! without the hardware. Everything that differs between encoders (how the bitrate is
//! set while PLAYING, the keyframe interval, low-latency settings, the parser and caps
//! after it) lives in [`ENCODERS`]; the pipeline code never names an encoder.
//!
//! Settings are `(property, value-as-string)` pairs applied with
//! `set_property_from_str`, so they are plain data a unit test can read.

use crate::config::{EncoderChoice, PictureSize};

/// Which GStreamer element factories are installed.
pub trait ElementRegistry {
    fn has(&self, factory: &str) -> bool;
}

/// The real GStreamer registry (call [`super::init`] first).
pub struct GstRegistry;

impl ElementRegistry for GstRegistry {
    fn has(&self, factory: &str) -> bool {
        gstreamer::ElementFactory::find(factory).is_some()
    }
}

/// A registry holding exactly the listed factories (tests).
#[derive(Debug, Default, Clone)]
pub struct FakeRegistry(pub Vec<&'static str>);

impl ElementRegistry for FakeRegistry {
    fn has(&self, factory: &str) -> bool {
        self.0.contains(&factory)
    }
}

/// How an encoder takes its bitrate (and, where they travel together, its GOP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitrateControl {
    /// An integer property in kbit/s.
    Kbps(&'static str),
    /// An integer property in bit/s.
    Bps(&'static str),
    /// Stateful V4L2 encoders on GStreamer 1.22: the `extra-controls` structure
    /// `controls,video_bitrate=BPS,...`, with the GOP controls in the same structure
    /// (setting the property replaces the whole structure).
    V4l2Controls {
        /// Controls that carry the keyframe period in frames.
        gop: &'static [&'static str],
    },
}

/// One encoder's quirks.
#[derive(Debug, Clone, Copy)]
pub struct EncoderQuirks {
    /// GStreamer element factory.
    pub factory: &'static str,
    /// `true` for H.265 (the parser and TS stream type follow).
    pub hevc: bool,
    /// Runtime bitrate.
    pub bitrate: BitrateControl,
    /// Keyframe interval property in frames, when not part of `bitrate`.
    pub keyframe_prop: Option<&'static str>,
    /// Fixed low-latency settings (no B-frames, no lookahead, small rate buffer).
    pub low_latency: &'static [(&'static str, &'static str)],
    /// Converter in front of the encoder (some want their own memory type).
    pub convert: &'static str,
    /// Caps between encoder and parser.
    pub output_caps: &'static str,
    /// Parser in front of the mux.
    pub parser: &'static str,
    /// A rate buffer to shrink for a moment after a large cut, so the output follows
    /// at once instead of spending what the buffer held at the old rate.
    pub rate_buffer: Option<RateBuffer>,
}

/// An encoder's rate buffer property: its normal value and the one used for
/// [`RATE_BUFFER_HOLD`] after the target falls by more than a quarter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBuffer {
    pub prop: &'static str,
    pub normal: &'static str,
    pub after_cut: &'static str,
}

/// How long the small rate buffer stays after a large cut.
pub const RATE_BUFFER_HOLD: std::time::Duration = std::time::Duration::from_millis(300);

/// Every supported encoder, in `auto` preference order: stateful V4L2 hardware
/// (Raspberry Pi, i.MX, Rockchip mainline), Rockchip MPP, NVIDIA Jetson, then software.
pub static ENCODERS: &[EncoderQuirks] = &[
    EncoderQuirks {
        factory: "v4l2h264enc",
        hevc: false,
        bitrate: BitrateControl::V4l2Controls {
            gop: &["h264_i_frame_period", "video_gop_size"],
        },
        keyframe_prop: None,
        low_latency: &[],
        convert: "videoconvert",
        // The Pi's encoder refuses to negotiate without a level.
        output_caps: "video/x-h264,stream-format=byte-stream,alignment=au,level=(string)4",
        parser: "h264parse",
        rate_buffer: None,
    },
    EncoderQuirks {
        factory: "v4l2h265enc",
        hevc: true,
        bitrate: BitrateControl::V4l2Controls {
            gop: &["video_gop_size"],
        },
        keyframe_prop: None,
        low_latency: &[],
        convert: "videoconvert",
        output_caps: "video/x-h265,stream-format=byte-stream,alignment=au",
        parser: "h265parse",
        rate_buffer: None,
    },
    EncoderQuirks {
        factory: "mpph264enc",
        hevc: false,
        bitrate: BitrateControl::Bps("bps"),
        keyframe_prop: Some("gop"),
        low_latency: &[("rc-mode", "cbr")],
        convert: "videoconvert",
        output_caps: "video/x-h264,stream-format=byte-stream,alignment=au",
        parser: "h264parse",
        rate_buffer: None,
    },
    EncoderQuirks {
        factory: "nvv4l2h264enc",
        hevc: false,
        bitrate: BitrateControl::Bps("bitrate"),
        keyframe_prop: Some("iframeinterval"),
        low_latency: &[
            ("control-rate", "1"),
            ("insert-sps-pps", "true"),
            ("maxperf-enable", "true"),
        ],
        convert: "nvvidconv",
        output_caps: "video/x-h264,stream-format=byte-stream,alignment=au",
        parser: "h264parse",
        rate_buffer: None,
    },
    EncoderQuirks {
        factory: "x264enc",
        hevc: false,
        bitrate: BitrateControl::Kbps("bitrate"),
        keyframe_prop: Some("key-int-max"),
        // zerolatency: no lookahead, no frame threads, no B-frames. The VBV buffer
        // (ms at the current bitrate) is what lets the output follow a lower target
        // within a few frames: with 150 ms the TS rate took 260-310 ms to fall below
        // 1.2x half the old target (200 ms window), with 100 ms 220-250 ms (see
        // tests/media.rs step_down). The price: a keyframe is at most 100 ms of bits.
        low_latency: &[
            ("tune", "zerolatency"),
            ("speed-preset", "superfast"),
            ("bframes", "0"),
            ("vbv-buf-capacity", "100"),
            ("rc-lookahead", "0"),
            ("byte-stream", "true"),
        ],
        convert: "videoconvert",
        output_caps: "video/x-h264,stream-format=byte-stream,alignment=au",
        parser: "h264parse",
        // One frame of rate buffer (at 30 fps) for 300 ms after a large cut.
        rate_buffer: Some(RateBuffer {
            prop: "vbv-buf-capacity",
            normal: "100",
            after_cut: "34",
        }),
    },
];

/// `video.encoder` could not be satisfied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncoderError {
    #[error("video.encoder: {0:?} is not installed (gst-inspect-1.0 {0} finds nothing)")]
    NotInstalled(String),
    #[error("video.encoder: {0:?} is not a supported encoder (supported: {1})")]
    Unsupported(String, String),
    #[error("no video encoder found (tried {0})")]
    NoneFound(String),
}

/// The quirks of `factory`, if braid knows it.
pub fn quirks(factory: &str) -> Option<&'static EncoderQuirks> {
    ENCODERS.iter().find(|q| q.factory == factory)
}

/// Picks the encoder for `choice` among what `registry` has.
pub fn select(
    choice: &EncoderChoice,
    registry: &dyn ElementRegistry,
) -> Result<&'static EncoderQuirks, EncoderError> {
    let names = || {
        ENCODERS
            .iter()
            .map(|q| q.factory)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match choice {
        EncoderChoice::Auto => ENCODERS
            .iter()
            .find(|q| registry.has(q.factory))
            .ok_or_else(|| EncoderError::NoneFound(names())),
        EncoderChoice::Named(name) => {
            let q = quirks(name).ok_or_else(|| EncoderError::Unsupported(name.clone(), names()))?;
            if registry.has(name) {
                Ok(q)
            } else {
                Err(EncoderError::NotInstalled(name.clone()))
            }
        }
    }
}

/// Keyframe period in frames for an interval at `fps` (at least 1).
pub fn gop_frames(fps: u32, interval: std::time::Duration) -> u32 {
    ((u128::from(fps) * interval.as_millis() + 500) / 1000).max(1) as u32
}

impl EncoderQuirks {
    /// Properties that set `bps` (and, for V4L2, the GOP of `gop` frames), to apply
    /// at start and whenever the target changes.
    pub fn bitrate_settings(&self, bps: u64, gop: u32) -> Vec<(&'static str, String)> {
        match self.bitrate {
            BitrateControl::Kbps(p) => vec![(p, (bps / 1000).max(1).to_string())],
            BitrateControl::Bps(p) => vec![(p, bps.to_string())],
            BitrateControl::V4l2Controls { gop: gop_controls } => {
                let mut s = format!("controls,video_bitrate={bps}");
                for c in gop_controls {
                    s.push_str(&format!(",{c}={gop}"));
                }
                vec![("extra-controls", s)]
            }
        }
    }

    /// Everything set before the encoder starts: low latency, keyframe period, bitrate.
    pub fn initial_settings(&self, bps: u64, gop: u32) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> = self
            .low_latency
            .iter()
            .map(|(k, val)| (*k, val.to_string()))
            .collect();
        if let Some(k) = self.keyframe_prop {
            v.push((k, gop.to_string()));
        }
        v.extend(self.bitrate_settings(bps, gop));
        v
    }
}

/// How to ask a V4L2 camera for a picture: caps for `v4l2src` and whether a JPEG
/// decoder must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureCaps {
    pub caps: String,
    pub jpeg: bool,
}

/// What to ask of `v4l2src`, in order: raw video at the configured size and rate,
/// the same as MJPEG (UVC cameras give high resolutions at full rate only as MJPEG),
/// raw at the configured size at any rate, then anything (scaled afterwards).
pub fn v4l2_caps_plan(size: PictureSize, fps: u32) -> Vec<CaptureCaps> {
    let PictureSize { width, height } = size;
    vec![
        CaptureCaps {
            caps: format!("video/x-raw,width={width},height={height},framerate={fps}/1"),
            jpeg: false,
        },
        CaptureCaps {
            caps: format!("image/jpeg,width={width},height={height},framerate={fps}/1"),
            jpeg: true,
        },
        CaptureCaps {
            caps: format!("video/x-raw,width={width},height={height}"),
            jpeg: false,
        },
        CaptureCaps {
            caps: "video/x-raw".to_string(),
            jpeg: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer::prelude::*;
    use std::time::Duration;

    fn auto(reg: &[&'static str]) -> Result<&'static str, EncoderError> {
        select(&EncoderChoice::Auto, &FakeRegistry(reg.to_vec())).map(|q| q.factory)
    }

    #[test]
    fn auto_prefers_hardware_in_table_order() {
        assert_eq!(auto(&["x264enc"]), Ok("x264enc"));
        assert_eq!(auto(&["x264enc", "nvv4l2h264enc"]), Ok("nvv4l2h264enc"));
        assert_eq!(
            auto(&["x264enc", "nvv4l2h264enc", "mpph264enc"]),
            Ok("mpph264enc")
        );
        assert_eq!(auto(&["x264enc", "v4l2h265enc"]), Ok("v4l2h265enc"));
        assert_eq!(
            auto(&["x264enc", "v4l2h265enc", "v4l2h264enc", "mpph264enc"]),
            Ok("v4l2h264enc")
        );
        let e = auto(&["openh264enc"]).unwrap_err();
        assert!(matches!(e, EncoderError::NoneFound(_)), "{e}");
    }

    #[test]
    fn named_encoder_must_be_present_and_known() {
        let reg = FakeRegistry(vec!["x264enc"]);
        let pick = |n: &str| select(&EncoderChoice::Named(n.into()), &reg).map(|q| q.factory);
        assert_eq!(pick("x264enc"), Ok("x264enc"));
        assert_eq!(
            pick("v4l2h264enc"),
            Err(EncoderError::NotInstalled("v4l2h264enc".into()))
        );
        let e = pick("vp8enc").unwrap_err();
        assert!(matches!(e, EncoderError::Unsupported(..)), "{e}");
        assert!(e.to_string().contains("x264enc"), "{e}");
        assert!(EncoderError::NotInstalled("v4l2h264enc".into())
            .to_string()
            .contains("not installed"));
    }

    #[test]
    fn real_registry_has_x264_here() {
        super::super::init().unwrap();
        assert!(GstRegistry.has("x264enc"));
        assert!(!GstRegistry.has("no-such-element-braid"));
        assert_eq!(
            select(&EncoderChoice::Named("x264enc".into()), &GstRegistry).map(|q| q.factory),
            Ok("x264enc")
        );
    }

    #[test]
    fn bitrate_units_per_encoder() {
        let set = |f: &str| quirks(f).unwrap().bitrate_settings(3_000_000, 30);
        assert_eq!(set("x264enc"), [("bitrate", "3000".to_string())]);
        assert_eq!(set("mpph264enc"), [("bps", "3000000".to_string())]);
        assert_eq!(set("nvv4l2h264enc"), [("bitrate", "3000000".to_string())]);
        assert_eq!(
            set("v4l2h264enc"),
            [(
                "extra-controls",
                "controls,video_bitrate=3000000,h264_i_frame_period=30,video_gop_size=30"
                    .to_string()
            )]
        );
        // The structure must parse as a GstStructure, or the property is refused.
        super::super::init().unwrap();
        let s: gstreamer::Structure = set("v4l2h264enc")[0].1.parse().unwrap();
        assert_eq!(s.get::<i32>("video_bitrate").unwrap(), 3_000_000);
    }

    #[test]
    fn x264_is_low_latency_with_gop_from_fps() {
        let q = quirks("x264enc").unwrap();
        let gop = gop_frames(30, Duration::from_millis(1000));
        assert_eq!(gop, 30);
        assert_eq!(gop_frames(25, Duration::from_millis(2000)), 50);
        assert_eq!(gop_frames(30, Duration::from_millis(10)), 1);
        let s = q.initial_settings(2_000_000, gop);
        let get = |k: &str| s.iter().find(|(p, _)| *p == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tune"), Some("zerolatency"));
        assert_eq!(get("bframes"), Some("0"));
        assert_eq!(get("key-int-max"), Some("30"));
        assert_eq!(get("bitrate"), Some("2000"));
        let vbv: u32 = get("vbv-buf-capacity").unwrap().parse().unwrap();
        assert!(
            vbv <= 100,
            "rate buffer {vbv} ms is too slow to follow a step down"
        );
        // Every setting names a real x264enc property with an acceptable value.
        super::super::init().unwrap();
        let enc = gstreamer::ElementFactory::make("x264enc").build().unwrap();
        for (k, v) in &s {
            assert!(enc.find_property(k).is_some(), "x264enc has no {k}");
            enc.set_property_from_str(k, v);
        }
        assert_eq!(enc.property::<u32>("bitrate"), 2000);
        assert_eq!(enc.property::<u32>("key-int-max"), 30);
    }

    #[test]
    fn every_table_entry_is_consistent() {
        for q in ENCODERS {
            assert_eq!(q.parser == "h265parse", q.hevc, "{}", q.factory);
            assert!(q.output_caps.starts_with(if q.hevc {
                "video/x-h265"
            } else {
                "video/x-h264"
            }));
            assert!(q.output_caps.contains("stream-format=byte-stream"));
            let keyframes_somewhere = q.keyframe_prop.is_some()
                || matches!(q.bitrate, BitrateControl::V4l2Controls { gop } if !gop.is_empty());
            assert!(keyframes_somewhere, "{}: no keyframe interval", q.factory);
        }
    }

    #[test]
    fn v4l2_caps_fall_back_from_raw_to_mjpeg_to_anything() {
        let plan = v4l2_caps_plan(
            PictureSize {
                width: 1920,
                height: 1080,
            },
            30,
        );
        assert_eq!(
            plan[0],
            CaptureCaps {
                caps: "video/x-raw,width=1920,height=1080,framerate=30/1".into(),
                jpeg: false
            }
        );
        assert_eq!(
            plan[1],
            CaptureCaps {
                caps: "image/jpeg,width=1920,height=1080,framerate=30/1".into(),
                jpeg: true
            }
        );
        assert!(!plan[2].caps.contains("framerate") && plan[2].caps.contains("width=1920"));
        assert_eq!(plan.last().unwrap().caps, "video/x-raw");
        super::super::init().unwrap();
        for c in &plan {
            let caps: gstreamer::Caps = c.caps.parse().unwrap();
            assert_eq!(caps.size(), 1);
        }
    }
}
