//! The default config, booted with a 640x480 framebuffer: `framebuffer` describes it (size,
//! a 3- or 4-byte RGB or BGR format, a buffer that holds stride * height pixels) and the
//! buffer is writable memory. Only a 64x64 square and a few lines are drawn: at CPL0 every
//! pixel may cost an emulated instruction or more.
#![no_std]
#![no_main]

use bootloader_api::info::PixelFormat;
use bootloader_api::{BootInfo, entry_point};
use conformance::{PAGE, check, check_eq, println};

entry_point!(kernel_main);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("framebuffer");
    conformance::install_idt();
    let Some(framebuffer) = boot_info.framebuffer.as_mut() else {
        conformance::fail(format_args!("framebuffer is None"))
    };
    let info = framebuffer.info();
    println!("framebuffer {info:?}");
    let buffer = framebuffer.buffer_mut();
    let start = buffer.as_ptr() as u64;
    println!("buffer at {start:#x}, {} bytes", buffer.len());
    check_eq!(info.width, 640usize, "width");
    check_eq!(info.height, 480usize, "height");
    check!(
        matches!(info.bytes_per_pixel, 3 | 4),
        "bytes_per_pixel {} is neither 3 nor 4",
        info.bytes_per_pixel
    );
    check!(
        matches!(info.pixel_format, PixelFormat::Rgb | PixelFormat::Bgr),
        "pixel_format {:?} is neither Rgb nor Bgr",
        info.pixel_format
    );
    check!(
        info.stride >= info.width,
        "stride {} < width {}",
        info.stride,
        info.width
    );
    check_eq!(
        buffer.len(),
        info.byte_len,
        "the buffer's length against byte_len"
    );
    let needed = info.stride * info.height * info.bytes_per_pixel;
    check!(
        info.byte_len >= needed,
        "byte_len {} < stride * height * bytes_per_pixel = {needed}",
        info.byte_len
    );
    check!(
        start != 0 && start.is_multiple_of(PAGE),
        "buffer_start {start:#x}"
    );

    let bpp = info.bytes_per_pixel;
    let (red, green, blue) = match info.pixel_format {
        PixelFormat::Rgb => (0, 1, 2),
        _ => (2, 1, 0),
    };
    let mut put = |x: usize, y: usize, rgb: [u8; 3]| {
        let at = (y * info.stride + x) * bpp;
        let pixel = &mut buffer[at..at + bpp];
        pixel[red] = rgb[0];
        pixel[green] = rgb[1];
        pixel[blue] = rgb[2];
    };
    // A 64x64 gradient in the top-left corner, a white frame line along the top and bottom
    // rows, and the last pixel of the buffer.
    for y in 0..64 {
        for x in 0..64 {
            put(x, y, [(x * 4) as u8, (y * 4) as u8, 0x80]);
        }
    }
    for x in 0..info.width {
        put(x, 0, [0xFF; 3]);
        put(x, info.height - 1, [0xFF; 3]);
    }
    put(info.width - 1, info.height - 1, [0x12, 0x34, 0x56]);
    // Read a few pixels back: the buffer is memory.
    let get = |x: usize, y: usize| {
        let at = (y * info.stride + x) * bpp;
        let pixel = &buffer[at..at + bpp];
        // SAFETY: in bounds; volatile so that the compiler reads what is there.
        let read = |i: usize| unsafe { core::ptr::read_volatile(&pixel[i]) };
        [read(red), read(green), read(blue)]
    };
    check_eq!(get(10, 20), [40u8, 80, 0x80], "pixel (10, 20) read back");
    check_eq!(get(63, 63), [252u8, 252, 0x80], "pixel (63, 63) read back");
    check_eq!(get(320, 0), [0xFFu8; 3], "pixel (320, 0) read back");
    check_eq!(
        get(info.width - 1, info.height - 1),
        [0x12u8, 0x34, 0x56],
        "the last pixel read back"
    );
    conformance::pass()
}
