#include "check_kvdist.h"
Suite *haproxy_suite(void)
{
    return suite_create("haproxy");
}
