//! The `bootloader` crate's `BootConfig` (what it bakes into a disk image as `boot.json`),
//! given to mote at run time instead.

/// What the `bootloader` crate's run-time `BootConfig` says (the real bootloader reads it from
/// the disk image at boot), given to a run instead: see
/// [`RunConfig::boot_config`](crate::RunConfig::boot_config).
///
/// mote honours what reaches the kernel: the framebuffer's minimum size and `_test_sentinel`
/// (written to `BootInfo._test_sentinel`, as the real bootloader does). The log settings are
/// kept, but have no effect: mote's loader writes nothing to the guest's screen or serial port.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeBootConfig {
    /// `frame_buffer.minimum_framebuffer_width`: the framebuffer is at least this wide.
    pub minimum_framebuffer_width: Option<u64>,
    /// `frame_buffer.minimum_framebuffer_height`: the framebuffer is at least this high.
    pub minimum_framebuffer_height: Option<u64>,
    /// `log_level`, as the bootloader spells it (`"Off"` to `"Trace"`; default `"Trace"`).
    pub log_level: String,
    /// `frame_buffer_logging` (default true).
    pub frame_buffer_logging: bool,
    /// `serial_logging` (default true).
    pub serial_logging: bool,
    /// `_test_sentinel`: handed to the kernel in `BootInfo._test_sentinel` (default 0).
    pub test_sentinel: u64,
}

impl Default for RuntimeBootConfig {
    /// The bootloader's defaults: no framebuffer minimum, log level `Trace`, both logs on,
    /// sentinel 0.
    fn default() -> Self {
        Self {
            minimum_framebuffer_width: None,
            minimum_framebuffer_height: None,
            log_level: "Trace".into(),
            frame_buffer_logging: true,
            serial_logging: true,
            test_sentinel: 0,
        }
    }
}

impl RuntimeBootConfig {
    /// The framebuffer to give, if any: `asked` (or 640x480 when this config sets a minimum and
    /// nothing else asked for a framebuffer), each side raised to its minimum.
    pub(crate) fn framebuffer(&self, asked: Option<(u32, u32)>) -> Option<(u64, u64)> {
        let minimum = (
            self.minimum_framebuffer_width,
            self.minimum_framebuffer_height,
        );
        let (width, height) = match (asked, minimum) {
            (Some(asked), _) => asked,
            (None, (None, None)) => return None,
            (None, _) => (640, 480),
        };
        Some((
            u64::from(width).max(minimum.0.unwrap_or(0)),
            u64::from(height).max(minimum.1.unwrap_or(0)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framebuffer_is_at_least_the_minimum() {
        let mut config = RuntimeBootConfig::default();
        assert_eq!(config.framebuffer(None), None);
        assert_eq!(config.framebuffer(Some((320, 200))), Some((320, 200)));
        config.minimum_framebuffer_width = Some(800);
        config.minimum_framebuffer_height = Some(600);
        assert_eq!(config.framebuffer(None), Some((800, 600)));
        assert_eq!(config.framebuffer(Some((1024, 200))), Some((1024, 600)));
        config.minimum_framebuffer_width = None;
        config.minimum_framebuffer_height = Some(720);
        assert_eq!(config.framebuffer(None), Some((640, 720)));
    }
}
