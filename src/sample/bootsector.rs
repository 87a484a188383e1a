//! A 512-byte x86 boot sector that proves a hypervisor can read the flat disk.
//!
//! It reads one sector at a chosen LBA (far into the disk, through the BIOS extended read,
//! INT 13h AH=42h), prints the NUL-terminated text found there on the first serial port and
//! the screen, then writes to QEMU's `isa-debug-exit` port (0xf4) so that a test VM exits by
//! itself, and halts. Hand-assembled 16-bit real-mode code; the listing is below, offsets
//! relative to 0x7c00.

/// Boot sector signature at offset 510.
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// Offset of the INT 13h disk address packet inside the sector.
const DAP_OFFSET: usize = 63;

/// Offset of the "read failed" message.
const ERROR_MESSAGE_OFFSET: usize = 79;

/// Value written to the isa-debug-exit port; QEMU exits with status `(value << 1) | 1` = 33.
pub const DEBUG_EXIT_VALUE: u8 = 0x10;

/// The code, 63 bytes, assembled by hand from:
/// ```text
///  0 fa            cli
///  1 31 c0         xor ax, ax
///  3 8e d8         mov ds, ax
///  5 8e c0         mov es, ax
///  7 8e d0         mov ss, ax
///  9 bc 00 7c      mov sp, 0x7c00
/// 12 fb            sti
/// 13 be 3f 7c      mov si, dap            ; 0x7c00 + 63
/// 16 b4 42         mov ah, 0x42           ; extended read, dl = boot drive from the BIOS
/// 18 cd 13         int 0x13
/// 20 72 08         jc fail                ; -> 30
/// 22 be 00 7e      mov si, 0x7e00         ; the sector just read
/// 25 e8 10 00      call print             ; -> 44
/// 28 eb 06         jmp done               ; -> 36
/// 30 be 4f 7c      fail: mov si, errmsg   ; 0x7c00 + 79
/// 33 e8 08 00      call print
/// 36 b0 10         done: mov al, 0x10
/// 38 e6 f4         out 0xf4, al           ; isa-debug-exit
/// 40 fa            cli
/// 41 f4            halt: hlt
/// 42 eb fd         jmp halt
/// 44 ac            print: lodsb
/// 45 84 c0         test al, al
/// 47 74 0d         jz .ret                ; -> 62
/// 49 ba f8 03      mov dx, 0x3f8          ; COM1 data port
/// 52 ee            out dx, al
/// 53 b4 0e         mov ah, 0x0e           ; teletype output
/// 55 bb 07 00      mov bx, 0x0007
/// 58 cd 10         int 0x10
/// 60 eb ee         jmp print
/// 62 c3            .ret: ret
/// ```
const CODE: [u8; 63] = [
    0xfa,
    0x31,
    0xc0,
    0x8e,
    0xd8,
    0x8e,
    0xc0,
    0x8e,
    0xd0,
    0xbc,
    0x00,
    0x7c,
    0xfb,
    0xbe,
    0x3f,
    0x7c,
    0xb4,
    0x42,
    0xcd,
    0x13,
    0x72,
    0x08,
    0xbe,
    0x00,
    0x7e,
    0xe8,
    0x10,
    0x00,
    0xeb,
    0x06,
    0xbe,
    0x4f,
    0x7c,
    0xe8,
    0x08,
    0x00,
    0xb0,
    DEBUG_EXIT_VALUE,
    0xe6,
    0xf4,
    0xfa,
    0xf4,
    0xeb,
    0xfd,
    0xac,
    0x84,
    0xc0,
    0x74,
    0x0d,
    0xba,
    0xf8,
    0x03,
    0xee,
    0xb4,
    0x0e,
    0xbb,
    0x07,
    0x00,
    0xcd,
    0x10,
    0xeb,
    0xee,
    0xc3,
];

/// Builds the boot sector that prints the text stored at sector `message_lba`.
pub fn boot_sector(message_lba: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..CODE.len()].copy_from_slice(&CODE);
    // Disk address packet: size 16, reserved, 1 sector, buffer 0000:7e00, 64-bit LBA.
    let dap = &mut s[DAP_OFFSET..DAP_OFFSET + 16];
    dap[..8].copy_from_slice(&[0x10, 0x00, 0x01, 0x00, 0x00, 0x7e, 0x00, 0x00]);
    dap[8..].copy_from_slice(&message_lba.to_le_bytes());
    let err = b"read failed\r\n\0";
    s[ERROR_MESSAGE_OFFSET..ERROR_MESSAGE_OFFSET + err.len()].copy_from_slice(err);
    s[510..].copy_from_slice(&BOOT_SIGNATURE);
    s
}

/// A sector holding `text` followed by NUL padding (the text must leave room for the NUL).
pub fn message_sector(text: &str) -> [u8; 512] {
    let mut s = [0u8; 512];
    let bytes = text.as_bytes();
    let n = bytes.len().min(511);
    s[..n].copy_from_slice(&bytes[..n]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_and_is_signed() {
        let s = boot_sector(0x0102_0304_0506);
        assert_eq!(&s[510..], &BOOT_SIGNATURE);
        assert_eq!(
            &s[DAP_OFFSET + 8..DAP_OFFSET + 16],
            &0x0102_0304_0506u64.to_le_bytes()
        );
        assert!(CODE.len() <= DAP_OFFSET);
        // Jump targets land where the listing says.
        assert_eq!(s[44], 0xac, "print: lodsb");
        assert_eq!(s[62], 0xc3, "ret");
        assert_eq!(s[30], 0xbe, "fail: mov si");
        assert_eq!(s[36], 0xb0, "done: mov al");
        assert_eq!(&s[ERROR_MESSAGE_OFFSET..ERROR_MESSAGE_OFFSET + 4], b"read");
    }
}
