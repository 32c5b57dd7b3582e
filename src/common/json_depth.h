/*-------------------------------------------------------------------------
 * json_depth.h
 *	  How deep the brackets of a JSON text nest, counted before parsing.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_JSON_DEPTH_H
#define MACHPAY_JSON_DEPTH_H

extern int	json_nesting_depth(const char *text, size_t len, int stop_above);

#endif
