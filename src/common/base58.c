/*-------------------------------------------------------------------------
 * base58.c
 *	  Base58 decoding for ids (32 bytes) and signatures (64 bytes).
 *
 * Hand-written: neither PostgreSQL nor Debian 12 ships a base58 library we
 * could link from the backend, and the algorithm is a few lines of
 * big-number arithmetic.  Inputs are short (at most 88 characters for a
 * signature), so the quadratic schoolbook conversion is fine.
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include "common/base58.h"

/* Value of each ASCII character in the alphabet, -1 when not in it. */
static const int8 b58_value[128] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1, -1, -1, -1,
	-1, 9, 10, 11, 12, 13, 14, 15, 16, -1, 17, 18, 19, 20, 21, -1,
	22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, -1, -1, -1, -1, -1,
	-1, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, -1, 44, 45, 46,
	47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, -1, -1, -1, -1, -1,
};

/* Longest text worth decoding: 64 bytes need at most 88 characters. */
#define BASE58_MAX_TEXT 90

bool
base58_decode_exact(const char *text, size_t len, unsigned char *out,
					int nbytes)
{
	unsigned char buf[BASE58_MAX_TEXT];	/* big-endian, grows leftwards */
	int			used = 0;		/* significant bytes at the end of buf */
	int			zeros = 0;
	size_t		i;

	if (len == 0 || len > BASE58_MAX_TEXT || nbytes > BASE58_MAX_TEXT)
		return false;

	while (zeros < (int) len && text[zeros] == '1')
		zeros++;

	for (i = zeros; i < len; i++)
	{
		unsigned char c = (unsigned char) text[i];
		int			carry;
		int			j;

		if (c >= 128 || b58_value[c] < 0)
			return false;
		carry = b58_value[c];
		for (j = 0; j < used; j++)
		{
			int			k = BASE58_MAX_TEXT - 1 - j;

			carry += 58 * buf[k];
			buf[k] = carry & 0xff;
			carry >>= 8;
		}
		while (carry > 0)
		{
			if (used >= BASE58_MAX_TEXT)
				return false;
			buf[BASE58_MAX_TEXT - 1 - used] = carry & 0xff;
			used++;
			carry >>= 8;
		}
	}

	if (zeros + used != nbytes)
		return false;
	if (out)
	{
		memset(out, 0, zeros);
		memcpy(out + zeros, buf + BASE58_MAX_TEXT - used, used);
	}
	return true;
}
