//! `vigil-fw`: Vigil's guest agent as a bare-metal image for the TI Stellaris LM3S6965 (QEMU `lm3s6965evb`,
//! Cortex-M3, `thumbv7m-none-eabi`). The same core `Agent` and the same `Driver` as the Linux agent, over UART0
//! (a PL011) with a 1 ms SysTick clock. Run it with
//! `qemu-system-arm -M lm3s6965evb -display none -monitor none -kernel vigil-fw -serial unix:PATH,server=on,wait=off`
//! and the UART appears on the host as a UNIX socket, exactly like a virtio-serial port.
#![no_std]
#![no_main]
// Memory-mapped registers need volatile accesses; each is to a fixed, documented LM3S6965 address.
#![allow(unsafe_code)]

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use vigil_core::{
    bounded, Agent, AgentConfig, AgentEvent, CorrectiveAction, Instant, NotificationType, VoteResult, XorShift32,
};
use vigil_guest::{Clock, Driver};

/// Core clock of the board as QEMU models it (12 MHz).
const CORE_HZ: u32 = 12_000_000;
const UART0: usize = 0x4000_C000;
const UART_DR: usize = 0x000;
const UART_FR: usize = 0x018;
const UART_LCRH: usize = 0x02C;
const UART_CR: usize = 0x030;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const SYSCTL_RCGC1: usize = 0x400F_E104;

static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn reg(addr: usize) -> *mut u32 {
    addr as *mut u32
}

fn read(addr: usize) -> u32 {
    // SAFETY: `addr` is one of the UART0/SYSCTL registers above, valid and aligned on this board.
    unsafe { core::ptr::read_volatile(reg(addr)) }
}

fn write(addr: usize, v: u32) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile(reg(addr), v) }
}

/// UART0 as an `embedded_io` transport. As the traits require, `read` waits for at least one byte and `write`
/// for room for at least one (`Ok(0)` would mean end of stream); the driver asks `read_ready`/`write_ready`
/// first, so in practice neither waits.
struct Uart;

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while read(UART0 + UART_FR) & FR_RXFE != 0 {
            core::hint::spin_loop();
        }
        let mut n = 0;
        while n < buf.len() && read(UART0 + UART_FR) & FR_RXFE == 0 {
            buf[n] = read(UART0 + UART_DR) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(read(UART0 + UART_FR) & FR_RXFE == 0)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while read(UART0 + UART_FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        let mut n = 0;
        while n < buf.len() && read(UART0 + UART_FR) & FR_TXFF == 0 {
            write(UART0 + UART_DR, u32::from(buf[n]));
            n += 1;
        }
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl embedded_io::WriteReady for Uart {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(read(UART0 + UART_FR) & FR_TXFF == 0)
    }
}

/// Milliseconds since boot from SysTick, widened to 64 bits.
struct SysTickClock {
    last: u32,
    high: u64,
}

impl Clock for SysTickClock {
    fn now(&mut self) -> Instant {
        let now = MILLIS.load(Ordering::Relaxed);
        if now < self.last {
            self.high += 1 << 32;
        }
        self.last = now;
        Instant::from_millis(self.high + u64::from(now))
    }
}

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else { halt() };
    cp.SYST.set_clock_source(SystClkSource::External);
    cp.SYST.set_reload(CORE_HZ / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();

    // UART0 clock on, FIFOs on, 8N1, enabled for TX and RX (QEMU ignores the baud rate)
    write(SYSCTL_RCGC1, read(SYSCTL_RCGC1) | 1);
    write(UART0 + UART_LCRH, (1 << 4) | (3 << 5));
    write(UART0 + UART_CR, 1 | (1 << 8) | (1 << 9));

    let config = AgentConfig {
        name: bounded("vigil-fw"),
        heartbeat_interval_ms: 1000,
        corrective_action: CorrectiveAction::Reboot,
        ..AgentConfig::default()
    };
    let seed = 0x5EED_0001 ^ cortex_m::peripheral::SYST::get_current();
    let mut clock = SysTickClock { last: 0, high: 0 };
    let agent = Agent::new(config, XorShift32::new(seed), clock.now());
    let mut driver = Driver::new(Uart, clock, agent);
    // This image has one application (itself): it is healthy while it runs, accepts votes, completes notices.
    let mut handler = |agent: &mut Agent<XorShift32>, e: AgentEvent| {
        if let AgentEvent::ActionRequest { notify, .. } = e {
            let result = match notify.notification_type {
                NotificationType::Revocable => VoteResult::Accept,
                NotificationType::Irrevocable | NotificationType::Unknown => VoteResult::Complete,
            };
            let _ = agent.answer_action(result, "firmware");
        }
    };
    loop {
        let _ = driver.poll(&mut handler);
        // sleep until the next SysTick (1 ms): the UART has 16-byte FIFOs, plenty at this rate
        cortex_m::asm::wfi();
    }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    halt()
}
