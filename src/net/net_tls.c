/*-------------------------------------------------------------------------
 * net_tls.c
 *	  The TLS context of a server (OpenSSL, which PostgreSQL links too):
 *	  certificate and key from machpay.tls_cert_file/tls_key_file, TLS 1.2
 *	  or later, ALPN "h2" preferred over "http/1.1".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/err.h>

#include "net/net_int.h"

static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h2[] = "h2";
	static const unsigned char h1[] = "http/1.1";
	const unsigned char *found_h1 = NULL;

	for (unsigned int i = 0; i < inlen; i += 1 + in[i])
	{
		unsigned int len = in[i];

		if (i + 1 + len > inlen)
			break;
		if (len == 2 && memcmp(in + i + 1, h2, 2) == 0)
		{
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		if (len == 8 && memcmp(in + i + 1, h1, 8) == 0)
			found_h1 = in + i + 1;
	}
	if (found_h1 == NULL)
		return SSL_TLSEXT_ERR_NOACK;
	*out = found_h1;
	*outlen = 8;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
net_tls_make_ctx(const char *cert_file, const char *key_file)
{
	SSL_CTX    *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL)
		ereport(ERROR, (errmsg("could not create the TLS context")));
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load machpay.tls_cert_file \"%s\": %s",
						cert_file, ERR_reason_error_string(ERR_get_error()))));
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_check_private_key(ctx) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load machpay.tls_key_file \"%s\": %s",
						key_file, ERR_reason_error_string(ERR_get_error()))));
	SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
	return ctx;
}

bool
net_tls_alpn_h2(NetConn *conn)
{
	const unsigned char *proto = NULL;
	unsigned int len = 0;

	SSL_get0_alpn_selected(conn->ssl, &proto, &len);
	return len == 2 && memcmp(proto, "h2", 2) == 0;
}
