# Entered through the Linux 64-bit boot protocol (CPL0, long mode, rsi = boot_params).
# Prints 'K' on COM1 if boot_params carries the "HdrS" magic at 0x202 (else 'X'), then asks the
# i8042 for a reset. Assemble like remote_hand.S.
.intel_syntax noprefix
.code64
start:
    mov eax, dword ptr [rsi+0x202]
    cmp eax, 0x53726448
    jne bad
    mov al, 'K'
    jmp report
bad:
    mov al, 'X'
report:
    mov dx, 0x3f8
    out dx, al
    mov al, 0xfe
    out 0x64, al
    hlt
    jmp report
