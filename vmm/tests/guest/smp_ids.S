# SMP harness guest (CPL3, 64-bit): each vCPU reads its x2APIC id (CPUID 0xB EDX) and initial
# APIC id (CPUID 1 EBX[31:24]), stores 0xc0de0000|id at 0x9000+16*id, the x2APIC id at +4, then
# counts at +8 forever. Assemble: as --64 -o s.o smp_ids.S && objcopy -O binary -j .text s.o s.bin
.intel_syntax noprefix
.code64
start:
    mov eax, 0xb
    xor ecx, ecx
    cpuid
    mov esi, edx
    mov eax, 1
    cpuid
    shr ebx, 24
    mov edi, ebx
    shl edi, 4
    add edi, 0x9000
    mov dword ptr [rdi+4], esi
    or ebx, 0xc0de0000
    mov dword ptr [rdi], ebx
spin:
    inc dword ptr [rdi+8]
    pause
    jmp spin
