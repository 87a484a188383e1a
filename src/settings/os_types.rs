//! CIM operating system types (`CIM_OperatingSystem.OSType`), the `ovf:id` of an
//! OperatingSystemSection (docs/formats.md §2.7; the list VirtualBox uses, to CIM 2.52).

/// Names by id; the index is the id.
pub(crate) const CIM_OS_TYPES: &[&str] = &[
    "Unknown",                               // 0
    "Other",                                 // 1
    "MACOS",                                 // 2
    "ATTUNIX",                               // 3
    "DGUX",                                  // 4
    "DECNT",                                 // 5
    "Tru64 UNIX",                            // 6
    "OpenVMS",                               // 7
    "HPUX",                                  // 8
    "AIX",                                   // 9
    "MVS",                                   // 10
    "OS400",                                 // 11
    "OS/2",                                  // 12
    "JavaVM",                                // 13
    "MSDOS",                                 // 14
    "WIN3x",                                 // 15
    "WIN95",                                 // 16
    "WIN98",                                 // 17
    "WINNT",                                 // 18
    "WINCE",                                 // 19
    "NCR3000",                               // 20
    "NetWare",                               // 21
    "OSF",                                   // 22
    "DC/OS",                                 // 23
    "Reliant UNIX",                          // 24
    "SCO UnixWare",                          // 25
    "SCO OpenServer",                        // 26
    "Sequent",                               // 27
    "IRIX",                                  // 28
    "Solaris",                               // 29
    "SunOS",                                 // 30
    "U6000",                                 // 31
    "ASERIES",                               // 32
    "HP NonStop OS",                         // 33
    "HP NonStop OSS",                        // 34
    "BS2000",                                // 35
    "LINUX",                                 // 36
    "Lynx",                                  // 37
    "XENIX",                                 // 38
    "VM",                                    // 39
    "Interactive UNIX",                      // 40
    "BSDUNIX",                               // 41
    "FreeBSD",                               // 42
    "NetBSD",                                // 43
    "GNU Hurd",                              // 44
    "OS9",                                   // 45
    "MACH Kernel",                           // 46
    "Inferno",                               // 47
    "QNX",                                   // 48
    "EPOC",                                  // 49
    "IxWorks",                               // 50
    "VxWorks",                               // 51
    "MiNT",                                  // 52
    "BeOS",                                  // 53
    "HP MPE",                                // 54
    "NextStep",                              // 55
    "PalmPilot",                             // 56
    "Rhapsody",                              // 57
    "Windows 2000",                          // 58
    "Dedicated",                             // 59
    "OS/390",                                // 60
    "VSE",                                   // 61
    "TPF",                                   // 62
    "Windows (R) Me",                        // 63
    "Caldera Open UNIX",                     // 64
    "OpenBSD",                               // 65
    "Not Applicable",                        // 66
    "Windows XP",                            // 67
    "z/OS",                                  // 68
    "Windows Server 2003",                   // 69
    "Windows Server 2003 64-Bit",            // 70
    "Windows XP 64-Bit",                     // 71
    "Windows XP Embedded",                   // 72
    "Windows Vista",                         // 73
    "Windows Vista 64-Bit",                  // 74
    "Windows Embedded for Point of Service", // 75
    "Windows Server 2008",                   // 76
    "Windows Server 2008 64-Bit",            // 77
    "FreeBSD 64-Bit",                        // 78
    "RedHat Enterprise Linux",               // 79
    "RedHat Enterprise Linux 64-Bit",        // 80
    "Solaris 64-Bit",                        // 81
    "SUSE",                                  // 82
    "SUSE 64-Bit",                           // 83
    "SLES",                                  // 84
    "SLES 64-Bit",                           // 85
    "Novell OES",                            // 86
    "Novell Linux Desktop",                  // 87
    "Sun Java Desktop System",               // 88
    "Mandriva",                              // 89
    "Mandriva 64-Bit",                       // 90
    "TurboLinux",                            // 91
    "TurboLinux 64-Bit",                     // 92
    "Ubuntu",                                // 93
    "Ubuntu 64-Bit",                         // 94
    "Debian",                                // 95
    "Debian 64-Bit",                         // 96
    "Linux 2.4.x",                           // 97
    "Linux 2.4.x 64-Bit",                    // 98
    "Linux 2.6.x",                           // 99
    "Linux 2.6.x 64-Bit",                    // 100
    "Linux 64-Bit",                          // 101
    "Other 64-Bit",                          // 102
    "Windows Server 2008 R2",                // 103
    "VMware ESXi",                           // 104
    "Windows 7",                             // 105
    "CentOS 32-bit",                         // 106
    "CentOS 64-bit",                         // 107
    "Oracle Linux 32-bit",                   // 108
    "Oracle Linux 64-bit",                   // 109
    "eComStation 32-bit",                    // 110
    "Windows Server 2011",                   // 111
    "Windows Server 2012",                   // 112
    "Windows 8",                             // 113
    "Windows 8 64-bit",                      // 114
    "Windows Server 2012 R2",                // 115
    "Windows 8.1",                           // 116
    "Windows 8.1 64-bit",                    // 117
    "Windows Server 2016",                   // 118
    "Windows 10",                            // 119
    "Windows 10 64-bit",                     // 120
];

/// The name of CIM OS type `id`, if it is in the list.
pub(crate) fn os_name(id: u16) -> Option<&'static str> {
    CIM_OS_TYPES.get(usize::from(id)).copied()
}

/// The id of a CIM OS type name, compared without case, spaces, dashes or parentheses.
pub(crate) fn os_id(name: &str) -> Option<u16> {
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric() || *c == '/')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let want = key(name);
    if want.is_empty() {
        return None;
    }
    CIM_OS_TYPES
        .iter()
        .position(|n| key(n) == want)
        .and_then(|i| u16::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(os_name(36), Some("LINUX"));
        assert_eq!(os_name(94), Some("Ubuntu 64-Bit"));
        assert_eq!(os_name(120), Some("Windows 10 64-bit"));
        assert_eq!(os_name(500), None);
        assert_eq!(os_id("linux"), Some(36));
        assert_eq!(os_id("ubuntu 64-bit"), Some(94));
        assert_eq!(os_id("Ubuntu64Bit"), Some(94));
        assert_eq!(os_id("OS/2"), Some(12));
        assert_eq!(os_id("nonsense"), None);
        assert_eq!(os_id(""), None);
    }
}
