# The harness guest: a "remote hand" running at CPL3 in 64-bit mode.
# It spins on a mailbox in guest memory (rbx = 0x8000) and performs one access per command:
#   +0  u32 cmd_seq   (host bumps it to post a command)
#   +4  u32 op        1 write32, 2 read32, 3 write8, 4 read8, 5 outb, 6 inb, 7 write16, 8 read16
#   +8  u64 addr      (memory address or port)
#   +16 u64 value
#   +24 u64 result    (guest writes, then...)
#   +32 u32 done_seq  (...acknowledges the command)
#   +36 u32 ready     0x600df00d once the first instruction ran
# Assemble: as --64 -o rh.o remote_hand.S && objcopy -O binary -j .text rh.o rh.bin
.intel_syntax noprefix
.code64
start:
    mov ebx, 0x8000
    mov dword ptr [rbx+36], 0x600df00d
    xor r12d, r12d
wait:
    pause
    mov eax, dword ptr [rbx]
    cmp eax, r12d
    je wait
    mov r12d, eax
    mov ecx, dword ptr [rbx+4]
    mov rdi, qword ptr [rbx+8]
    mov rsi, qword ptr [rbx+16]
    xor eax, eax
    cmp ecx, 1
    je op_w32
    cmp ecx, 2
    je op_r32
    cmp ecx, 3
    je op_w8
    cmp ecx, 4
    je op_r8
    cmp ecx, 5
    je op_ob
    cmp ecx, 6
    je op_ib
    cmp ecx, 7
    je op_w16
    cmp ecx, 8
    je op_r16
    jmp done
op_w32: mov dword ptr [rdi], esi
    jmp done
op_r32: mov eax, dword ptr [rdi]
    jmp done
op_w8: mov byte ptr [rdi], sil
    jmp done
op_r8: movzx eax, byte ptr [rdi]
    jmp done
op_ob: mov edx, edi
    mov eax, esi
    out dx, al
    jmp done
op_ib: mov edx, edi
    in al, dx
    movzx eax, al
    jmp done
op_w16: mov word ptr [rdi], si
    jmp done
op_r16: movzx eax, word ptr [rdi]
done:
    mov qword ptr [rbx+24], rax
    mov dword ptr [rbx+32], r12d
    jmp wait
