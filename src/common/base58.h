/*-------------------------------------------------------------------------
 * base58.h
 *	  Base58 (Bitcoin/Solana alphabet) decoding of entity ids and signatures.
 *
 * An *id* (gateway, agent, entity, token) is base58 text decoding to exactly
 * 32 bytes; a *signature* decodes to exactly 64 bytes.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BASE58_H
#define MACHPAY_BASE58_H

#define BASE58_ID_BYTES			32
#define BASE58_SIGNATURE_BYTES	64

/*
 * Decode text[0..len) into out[0..nbytes); true only when the text is valid
 * base58 whose decoded value is exactly nbytes long (leading '1's count as
 * zero bytes, as in Solana's encoding).  out may be NULL.
 */
extern bool base58_decode_exact(const char *text, size_t len,
								unsigned char *out, int nbytes);

#endif							/* MACHPAY_BASE58_H */
