/* A stand-in bcryptprimitives.dll for wine 8.0, which lacks ProcessPrng (Rust >= 1.78's
 * std gets its random bytes from it). Backed by advapi32's SystemFunction036 (RtlGenRandom),
 * which wine has. Built with mingw-w64 by .ci/windows.sh and copied into the wine prefix. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
