//! The boot-protocol conformance suite: plain `bootloader_api` kernels (`guest/conformance/`,
//! no mote crate), one per feature, each checking its own `BootInfo` and mappings from inside
//! at CPL0 and reporting as the real bootloader's test kernels do: a line on COM1 and 0x10
//! (pass) or 0x11 (fail) written to the isa-debug-exit port.

use std::time::Duration;

use mote_host::{Exit, Outcome, RunConfig};
use mote_tests::{run_guest_with, text};

/// Boots conformance kernel `name` with `config` and asserts that it passed.
fn passes(name: &str, config: RunConfig) -> Outcome {
    let outcome = run_guest_with(name, config);
    let console = text(&outcome.console);
    assert_eq!(
        outcome.exit,
        Exit::DebugExit { value: 0x10 },
        "conformance kernel `{name}` did not pass; its console:\n{console}"
    );
    assert!(
        console.contains("PASS"),
        "`{name}` exited with 0x10 without saying PASS:\n{console}"
    );
    outcome
}

#[test]
fn default_settings() {
    passes("default_settings", RunConfig::default());
}

#[test]
fn fixed_kernel_base() {
    passes("fixed_kernel_base", RunConfig::default());
}

#[test]
fn higher_half() {
    passes("higher_half", RunConfig::default());
}

#[test]
fn map_phys_mem_dynamic() {
    passes("map_phys_mem_dynamic", RunConfig::default());
}

#[test]
fn map_phys_mem_fixed() {
    passes("map_phys_mem_fixed", RunConfig::default());
}

#[test]
fn recursive_map() {
    passes("recursive_map", RunConfig::default());
}

#[test]
fn min_stack() {
    passes("min_stack", RunConfig::default());
}

#[test]
fn fixed_stack() {
    passes("fixed_stack", RunConfig::default());
}

#[test]
fn stack_guard() {
    let outcome = passes("stack_guard", RunConfig::default());
    // It passed in its page-fault handler, not by reading the guard page.
    let console = text(&outcome.console);
    assert!(console.contains("expected"), "{console}");
}

#[test]
fn ramdisk() {
    passes(
        "ramdisk",
        RunConfig::default().input(b"mote conformance ramdisk\n".to_vec()),
    );
}

#[test]
fn tls() {
    passes("tls", RunConfig::default());
}

#[test]
fn framebuffer() {
    let config = RunConfig::default()
        .framebuffer(640, 480)
        .expect("640x480 is a valid framebuffer");
    let outcome = passes("framebuffer", config);
    // What the kernel drew is what the host sees: pixel (10, 20) of its gradient, and its
    // white top row.
    let screen = outcome
        .framebuffer
        .expect("a run with a framebuffer returns its contents");
    assert_eq!((screen.width, screen.height), (640, 480));
    let pixel = |x: usize, y: usize| {
        let at = (y * screen.width as usize + x) * 3;
        [screen.rgb[at], screen.rgb[at + 1], screen.rgb[at + 2]]
    };
    assert_eq!(pixel(10, 20), [40, 80, 0x80]);
    assert_eq!(pixel(320, 0), [0xFF; 3]);
}

#[test]
fn rsdp() {
    passes("rsdp", RunConfig::default().acpi());
}

#[test]
fn write_usable_memory() {
    passes("write_usable_memory", RunConfig::default());
}

#[test]
fn lower_memory_free() {
    passes("lower_memory_free", RunConfig::default());
}

#[test]
fn rsdp_with_irqchip() {
    passes("rsdp", RunConfig::default().acpi().irqchip());
}

/// Interrupt kernels run at CPL0, which some hosts emulate: a generous deadline, never reached
/// when they work (10 ticks of 10 ms each).
fn irqchip() -> RunConfig {
    RunConfig::default()
        .irqchip()
        .timeout(Duration::from_secs(20))
        .unwrap()
}

#[test]
fn pic_timer() {
    let outcome = passes("pic_timer", irqchip());
    assert!(text(&outcome.console).contains("10 PIT ticks"));
}

#[test]
fn lapic_timer() {
    let outcome = passes("lapic_timer", irqchip());
    assert!(text(&outcome.console).contains("10 local APIC timer ticks"));
}

#[test]
fn without_irqchip_the_local_apic_is_not_served() {
    let outcome = run_guest_with("lapic_timer", RunConfig::default());
    assert!(
        matches!(outcome.exit, Exit::UnservedMmio { address, .. } if address & !0xFFF == 0xFEE0_0000),
        "{:?}",
        outcome.exit
    );
}

#[test]
fn cli_hlt_ends_as_halted_with_or_without_irqchip() {
    // With the irqchip `hlt` stays in KVM; mote must still see the halt, long before the
    // deadline.
    for config in [RunConfig::default(), RunConfig::default().irqchip()] {
        let config = config.timeout(Duration::from_secs(10)).unwrap();
        let outcome = run_guest_with("halt", config);
        assert_halted_for_good(&outcome.exit);
        assert!(
            outcome.stats.phases.run < Duration::from_secs(3),
            "a halted guest ran for {:?}",
            outcome.stats.phases.run
        );
    }
}

#[test]
fn cli_hlt_with_irqchip_ends_without_a_deadline_or_a_token() {
    // Nothing else could kick such a run: the halt checks alone make it kickable.
    let outcome = mote_tests::within(Duration::from_secs(20), || {
        run_guest_with("halt", RunConfig::default().irqchip().no_timeout())
    });
    assert_halted_for_good(&outcome.exit);
}

/// The guest halted with interrupts off: for good, as `cli; hlt` does.
fn assert_halted_for_good(exit: &Exit) {
    assert!(
        matches!(
            exit,
            Exit::Halted {
                interrupts_enabled: false,
                ..
            }
        ),
        "{exit:?}"
    );
}

#[test]
fn sti_hlt_with_irqchip_waits_for_an_interrupt() {
    // Interrupts on, nothing programmed: nothing ever wakes it, yet it has not halted for good
    // (a timer could), so it runs to its deadline.
    let config = RunConfig::default()
        .irqchip()
        .input(b"sti".to_vec())
        .timeout(Duration::from_millis(500))
        .unwrap();
    let outcome = run_guest_with("halt", config);
    assert!(
        matches!(outcome.exit, Exit::Timeout { .. }),
        "{:?}",
        outcome.exit
    );
    assert!(text(&outcome.console).contains("interrupts on"));
}

#[test]
fn cli_hlt_with_an_nmi_source_waits_for_it() {
    // LINT0 routed as an NMI: an NMI wakes the CPU whatever its interrupt flag, so this halt is
    // not for good, and the run lasts until its deadline.
    let config = RunConfig::default()
        .irqchip()
        .input(b"nmi".to_vec())
        .timeout(Duration::from_millis(500))
        .unwrap();
    let outcome = run_guest_with("halt", config);
    let console = text(&outcome.console);
    assert!(
        matches!(outcome.exit, Exit::Timeout { .. }),
        "{:?}\n{console}",
        outcome.exit
    );
    assert!(console.contains("LINT0 delivers NMIs"), "{console}");
}

#[test]
fn pc_memory_map() {
    let outcome = passes("pc_memory_map", RunConfig::default().acpi());
    // More than 4 regions, as the real bootloader's check_boot_info kernels assert.
    let console = text(&outcome.console);
    let regions = console.lines().filter(|l| l.starts_with("  0x")).count();
    assert!(regions > 4, "{console}");
}

#[test]
fn pc_memory_map_with_irqchip_reserves_the_io_apic_too() {
    let outcome = passes("pc_memory_map", RunConfig::default().acpi().irqchip());
    let console = text(&outcome.console);
    assert!(
        console.contains("MADT: I/O APIC at 0xfec00000"),
        "{console}"
    );
    assert!(
        console.contains("0x00fec00000..0x00fec01000 UnknownBios(2)"),
        "{console}"
    );
}

#[test]
fn without_firmware_the_map_stays_minimal() {
    let outcome = run_guest_with("pc_memory_map", RunConfig::default());
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x11 });
    assert!(text(&outcome.console).contains("3 memory regions"));
}

#[test]
fn boot_config() {
    // The sentinel the bootloader's own custom_config test sets, and a framebuffer minimum.
    let mut boot_config = mote_host::RuntimeBootConfig::default();
    boot_config.test_sentinel = 0xb001_b001_b001;
    boot_config.minimum_framebuffer_width = Some(800);
    boot_config.minimum_framebuffer_height = Some(600);
    let outcome = passes(
        "boot_config",
        RunConfig::default().boot_config(boot_config).unwrap(),
    );
    let screen = outcome.framebuffer.expect("a framebuffer");
    assert_eq!((screen.width, screen.height), (800, 600));
    // Without it the sentinel is 0, as the real bootloader leaves it.
    let outcome = run_guest_with("boot_config", RunConfig::default());
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x11 });
    assert!(text(&outcome.console).contains("sentinel = 0x0"));
}
