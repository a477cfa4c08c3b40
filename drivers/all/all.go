// Package all registers every driver type built into edged.
package all

import (
	_ "github.com/edgedrun/edged/drivers/httpupload" // images POSTed to the admin server
	_ "github.com/edgedrun/edged/drivers/imagedir"   // image files dropped by AOI cameras
	_ "github.com/edgedrun/edged/drivers/modbus"     // Modbus TCP PLCs and sensors
	_ "github.com/edgedrun/edged/drivers/opcua"      // OPC UA servers: PLCs, SCADA
	_ "github.com/edgedrun/edged/drivers/sim"        // simulated EL line
)
