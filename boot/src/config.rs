//! The `bootloader_api` configuration a kernel embeds in its `.bootloader-config` section.
//!
//! The layout is `bootloader_api`'s own packed little-endian serialisation; three sizes exist
//! (0.11.0: 115 bytes, 0.11.1-0.11.10: 124 bytes, 0.11.11 and later: 133 bytes). See
//! `docs/boot-protocol.md`.

use crate::BootError;

/// The UUID every serialised config starts with.
const CONFIG_UUID: [u8; 16] = [
    0x74, 0x3C, 0xA9, 0x61, 0x09, 0x36, 0x46, 0xA0, 0xBB, 0x55, 0x5C, 0x15, 0x89, 0x15, 0x25, 0x3D,
];

/// Where the loader should put one thing in the kernel's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mapping {
    /// Anywhere free: mote picks a free 512 GiB slot.
    Dynamic,
    /// At this virtual address.
    FixedAddress(u64),
}

/// The `bootloader_api` version a kernel was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
    /// Whether it is a pre-release.
    pub pre_release: bool,
}

/// A kernel's boot configuration, every field of every layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// The `bootloader_api` version the kernel was built with; written back into `BootInfo`.
    pub api_version: ApiVersion,
    /// Size of the kernel stack in bytes.
    pub kernel_stack_size: u64,
    /// Where the stack goes (its first page is the unmapped guard page).
    pub kernel_stack: Mapping,
    /// Where a position-independent kernel is loaded.
    pub kernel_base: Mapping,
    /// Where `BootInfo` and its memory map go.
    pub boot_info: Mapping,
    /// Where the framebuffer is mapped, if there is one.
    pub framebuffer: Mapping,
    /// Whether and where all physical memory is mapped.
    pub physical_memory: Option<Mapping>,
    /// Whether and where the recursive page-table entry goes.
    pub page_table_recursive: Option<Mapping>,
    /// Randomise dynamic addresses.
    pub aslr: bool,
    /// Lowest address dynamic mappings may use.
    pub dynamic_range_start: Option<u64>,
    /// Highest address dynamic mappings may use.
    pub dynamic_range_end: Option<u64>,
    /// Where the ramdisk is mapped, if there is one.
    pub ramdisk_memory: Mapping,
    /// Deprecated framebuffer height hint.
    pub minimum_framebuffer_height: Option<u64>,
    /// Deprecated framebuffer width hint.
    pub minimum_framebuffer_width: Option<u64>,
}

/// Reads fields off the front of the serialised config.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BootError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| config_error("it ends early"))?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, BootError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, BootError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn bool(&mut self, field: &str) -> Result<bool, BootError> {
        match self.take::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(config_error(&format!("{field} holds {other}, not a bool"))),
        }
    }

    fn mapping(&mut self, field: &str) -> Result<Mapping, BootError> {
        let tag = self.take::<1>()?[0];
        let value = self.u64()?;
        match (tag, value) {
            (0, 0) => Ok(Mapping::Dynamic),
            (1, address) => Ok(Mapping::FixedAddress(address)),
            _ => Err(config_error(&format!("{field} is not a valid mapping"))),
        }
    }

    fn option<T>(
        &mut self,
        field: &str,
        payload_len: usize,
        read: impl FnOnce(&mut Self) -> Result<T, BootError>,
    ) -> Result<Option<T>, BootError> {
        match self.take::<1>()?[0] {
            0 => {
                let payload = self
                    .bytes
                    .get(..payload_len)
                    .ok_or_else(|| config_error("it ends early"))?;
                if payload.iter().any(|&b| b != 0) {
                    return Err(config_error(&format!("{field} is None with a payload")));
                }
                self.bytes = &self.bytes[payload_len..];
                Ok(None)
            }
            1 => read(self).map(Some),
            other => Err(config_error(&format!("{field} has option tag {other}"))),
        }
    }
}

fn config_error(why: &str) -> BootError {
    BootError::BadConfig(why.to_owned())
}

impl BootConfig {
    /// Parses a serialised config of any known layout.
    pub fn parse(bytes: &[u8]) -> Result<Self, BootError> {
        // Older layouts lack fields that later ones inserted in the middle.
        let (has_kernel_base, has_ramdisk) = match bytes.len() {
            133 => (true, true),
            124 => (false, true),
            115 => (false, false),
            other => {
                return Err(config_error(&format!(
                    "it is {other} bytes long; bootloader_api 0.11 writes 115, 124 or 133"
                )));
            }
        };
        let mut r = Reader { bytes };
        if r.take::<16>()? != CONFIG_UUID {
            return Err(config_error("its UUID is not bootloader_api's"));
        }
        let api_version = ApiVersion {
            major: r.u16()?,
            minor: r.u16()?,
            patch: r.u16()?,
            pre_release: r.bool("pre_release")?,
        };
        let kernel_stack_size = r.u64()?;
        let kernel_stack = r.mapping("kernel_stack")?;
        let kernel_base = if has_kernel_base {
            r.mapping("kernel_base")?
        } else {
            Mapping::Dynamic
        };
        let boot_info = r.mapping("boot_info")?;
        let framebuffer = r.mapping("framebuffer")?;
        let physical_memory = r.option("physical_memory", 9, |r| r.mapping("physical_memory"))?;
        let page_table_recursive = r.option("page_table_recursive", 9, |r| {
            r.mapping("page_table_recursive")
        })?;
        let aslr = r.bool("aslr")?;
        let dynamic_range_start = r.option("dynamic_range_start", 8, Reader::u64)?;
        let dynamic_range_end = r.option("dynamic_range_end", 8, Reader::u64)?;
        let ramdisk_memory = if has_ramdisk {
            r.mapping("ramdisk_memory")?
        } else {
            Mapping::Dynamic
        };
        let minimum_framebuffer_height = r.option("minimum_framebuffer_height", 8, Reader::u64)?;
        let minimum_framebuffer_width = r.option("minimum_framebuffer_width", 8, Reader::u64)?;
        debug_assert!(r.bytes.is_empty());
        Ok(Self {
            api_version,
            kernel_stack_size,
            kernel_stack,
            kernel_base,
            boot_info,
            framebuffer,
            physical_memory,
            page_table_recursive,
            aslr,
            dynamic_range_start,
            dynamic_range_end,
            ramdisk_memory,
            minimum_framebuffer_height,
            minimum_framebuffer_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bootloader_api`'s own serialisation of its default config.
    fn default_bytes() -> [u8; 133] {
        bootloader_api::BootloaderConfig::new_default().serialize()
    }

    #[test]
    fn parses_the_default_config_of_the_crate() {
        let config = BootConfig::parse(&default_bytes()).unwrap();
        assert_eq!(config.api_version.major, 0);
        assert_eq!(config.api_version.minor, 11);
        assert_eq!(config.kernel_stack_size, 80 * 1024);
        assert_eq!(config.kernel_stack, Mapping::Dynamic);
        assert_eq!(config.kernel_base, Mapping::Dynamic);
        assert_eq!(config.physical_memory, None);
        assert!(!config.aslr);
    }

    #[test]
    fn parses_every_field_the_crate_can_set() {
        let mut c = bootloader_api::BootloaderConfig::new_default();
        c.kernel_stack_size = 0x5000;
        c.mappings.kernel_stack = bootloader_api::config::Mapping::FixedAddress(0x1000_0000);
        c.mappings.kernel_base = bootloader_api::config::Mapping::FixedAddress(0x2000_0000);
        c.mappings.physical_memory = Some(bootloader_api::config::Mapping::Dynamic);
        c.mappings.page_table_recursive = Some(bootloader_api::config::Mapping::FixedAddress(
            0x8000_0000_0000 - (1 << 39),
        ));
        c.mappings.aslr = true;
        c.mappings.dynamic_range_start = Some(0x1000);
        c.mappings.dynamic_range_end = Some(0xFFFF_FFFF);
        c.mappings.ramdisk_memory = bootloader_api::config::Mapping::FixedAddress(0x3000_0000);
        let config = BootConfig::parse(&c.serialize()).unwrap();
        assert_eq!(config.kernel_stack_size, 0x5000);
        assert_eq!(config.kernel_stack, Mapping::FixedAddress(0x1000_0000));
        assert_eq!(config.kernel_base, Mapping::FixedAddress(0x2000_0000));
        assert_eq!(config.physical_memory, Some(Mapping::Dynamic));
        assert_eq!(
            config.page_table_recursive,
            Some(Mapping::FixedAddress(0x8000_0000_0000 - (1 << 39)))
        );
        assert!(config.aslr);
        assert_eq!(config.dynamic_range_start, Some(0x1000));
        assert_eq!(config.dynamic_range_end, Some(0xFFFF_FFFF));
        assert_eq!(config.ramdisk_memory, Mapping::FixedAddress(0x3000_0000));
    }

    #[test]
    fn parses_the_older_layouts() {
        let new = default_bytes();
        // 0.11.1-0.11.10: no kernel_base (bytes 40..49).
        let mid: Vec<u8> = new[..40].iter().chain(&new[49..]).copied().collect();
        assert_eq!(mid.len(), 124);
        assert_eq!(
            BootConfig::parse(&mid).unwrap().kernel_stack_size,
            80 * 1024
        );
        // 0.11.0: no kernel_base and no ramdisk_memory (bytes 106..115).
        let old: Vec<u8> = new[..40]
            .iter()
            .chain(&new[49..106])
            .chain(&new[115..])
            .copied()
            .collect();
        assert_eq!(old.len(), 115);
        assert_eq!(BootConfig::parse(&old).unwrap().boot_info, Mapping::Dynamic);
    }

    #[test]
    fn rejects_wrong_sizes_uuids_and_tags() {
        let good = default_bytes();
        assert!(matches!(
            BootConfig::parse(&good[..100]),
            Err(BootError::BadConfig(_))
        ));
        let mut bad_uuid = good;
        bad_uuid[0] ^= 1;
        assert!(BootConfig::parse(&bad_uuid).is_err());
        let mut bad_tag = good;
        bad_tag[31] = 7; // kernel_stack mapping tag
        assert!(BootConfig::parse(&bad_tag).is_err());
        let mut dynamic_with_payload = good;
        dynamic_with_payload[32] = 1;
        assert!(BootConfig::parse(&dynamic_with_payload).is_err());
        let mut bad_bool = good;
        bad_bool[87] = 2; // aslr
        assert!(BootConfig::parse(&bad_bool).is_err());
    }
}
