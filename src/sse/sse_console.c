/*-------------------------------------------------------------------------
 * sse_console.c
 *	  The console page served at GET / on the SSE port.
 *
 * console/index.html is embedded into the shared library at build time
 * (.incbin, path relative to the top of the source tree where make runs),
 * so the page always matches the relay that serves it and nothing has to
 * be installed or found at run time.  The Makefile makes this object depend
 * on the page.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "sse/sse.h"

__asm__(".section .rodata\n"
		".balign 16\n"
		"machpay_console_page_start:\n"
		".incbin \"console/index.html\"\n"
		"machpay_console_page_end:\n"
		".byte 0\n"
		".previous\n");

extern const char machpay_console_page_start[];
extern const char machpay_console_page_end[];

const char *
sse_console_page(size_t *len)
{
	*len = machpay_console_page_end - machpay_console_page_start;
	return machpay_console_page_start;
}
